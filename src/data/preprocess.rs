//! `preprocess.json` of an image folder and its application to one image:
//! resize (bilinear) → center crop → x = (pixel·scale − mean[c]) / std[c] → layout.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageBuffer, Pixel};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const PREPROCESS_FILE: &str = "preprocess.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Preprocess {
    pub resize: Option<Resize>,
    pub center_crop: Option<Size>,
    /// Multiplies the 0..255 pixel value before mean/std.
    pub scale: f32,
    /// One value for all channels or one per channel, in output channel order.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub channel_order: ChannelOrder,
    pub layout: Layout,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            resize: None,
            center_crop: None,
            scale: 1.0 / 255.0,
            mean: vec![0.0],
            std: vec![1.0],
            channel_order: ChannelOrder::Rgb,
            layout: Layout::Nchw,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub height: u32,
    pub width: u32,
}

/// `{"height": h, "width": w}` resizes to exactly that size; `{"shorter_side": s}` scales the
/// shorter side to `s` keeping the aspect ratio (torchvision's `Resize(s)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawResize", into = "RawResize")]
pub enum Resize {
    Exact(Size),
    ShorterSide(u32),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResize {
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shorter_side: Option<u32>,
}

impl TryFrom<RawResize> for Resize {
    type Error = String;
    fn try_from(raw: RawResize) -> std::result::Result<Self, String> {
        match (raw.height, raw.width, raw.shorter_side) {
            (Some(height), Some(width), None) => Ok(Resize::Exact(Size { height, width })),
            (None, None, Some(s)) => Ok(Resize::ShorterSide(s)),
            _ => Err(
                "field 'resize': expected {\"height\": h, \"width\": w} or {\"shorter_side\": s}"
                    .to_string(),
            ),
        }
    }
}

impl From<Resize> for RawResize {
    fn from(r: Resize) -> Self {
        match r {
            Resize::Exact(s) => RawResize {
                height: Some(s.height),
                width: Some(s.width),
                shorter_side: None,
            },
            Resize::ShorterSide(s) => RawResize {
                height: None,
                width: None,
                shorter_side: Some(s),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
    Gray,
}

impl ChannelOrder {
    pub fn channels(self) -> usize {
        match self {
            ChannelOrder::Rgb | ChannelOrder::Bgr => 3,
            ChannelOrder::Gray => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

impl Preprocess {
    /// Read `root/preprocess.json`, or the defaults when there is none.
    pub fn load(root: &Path) -> Result<Preprocess> {
        let path = root.join(PREPROCESS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Preprocess::default()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Preprocess::parse(&path.display().to_string(), &text)
    }

    /// Parse and check a spec; `file` names it in messages.
    pub fn parse(file: &str, text: &str) -> Result<Preprocess> {
        let spec: Preprocess =
            serde_json::from_str(text).map_err(|e| Error::input(format!("{file}: {e}")))?;
        spec.validate(file)?;
        Ok(spec)
    }

    fn validate(&self, file: &str) -> Result<()> {
        let channels = self.channel_order.channels();
        for (field, values) in [("mean", &self.mean), ("std", &self.std)] {
            if values.len() != 1 && values.len() != channels {
                return Err(Error::input(format!(
                    "{file}: field '{field}' has {} values; expected 1 or {channels} (one per \
                     channel for channel_order {:?})",
                    values.len(),
                    self.channel_order
                )));
            }
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(Error::input(format!(
                    "{file}: field '{field}' contains {v}; expected finite numbers"
                )));
            }
        }
        if self.std.contains(&0.0) {
            return Err(Error::input(format!(
                "{file}: field 'std' contains 0; expected non-zero values"
            )));
        }
        if !self.scale.is_finite() {
            return Err(Error::input(format!(
                "{file}: field 'scale' is {}; expected a finite number",
                self.scale
            )));
        }
        let zero_size = |s: &Size| s.height == 0 || s.width == 0;
        if matches!(self.resize, Some(Resize::Exact(s)) if zero_size(&s))
            || matches!(self.resize, Some(Resize::ShorterSide(0)))
        {
            return Err(Error::input(format!(
                "{file}: field 'resize' has a zero size"
            )));
        }
        if self.center_crop.as_ref().is_some_and(zero_size) {
            return Err(Error::input(format!(
                "{file}: field 'center_crop' has a zero size"
            )));
        }
        Ok(())
    }

    /// Preprocess one decoded image into a sample: its shape (`[C, H, W]` or `[H, W, C]`) and
    /// values in that layout. `file` names the image in messages.
    pub fn apply(&self, file: &str, image: DynamicImage) -> Result<(Vec<usize>, Vec<f32>)> {
        match self.channel_order {
            ChannelOrder::Gray => self.apply_to(file, image.to_luma8()),
            ChannelOrder::Rgb | ChannelOrder::Bgr => self.apply_to(file, image.to_rgb8()),
        }
    }

    fn apply_to<P>(
        &self,
        file: &str,
        image: ImageBuffer<P, Vec<u8>>,
    ) -> Result<(Vec<usize>, Vec<f32>)>
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let image = match self.resize {
            Some(resize) => {
                let (w, h) = resized_size(resize, image.width(), image.height());
                imageops::resize(&image, w, h, FilterType::Triangle)
            }
            None => image,
        };
        let image = match self.center_crop {
            Some(crop) => {
                if crop.width > image.width() || crop.height > image.height() {
                    return Err(Error::input(format!(
                        "{file}: image is {}×{} (width×height) after resize, smaller than \
                         center_crop {}×{}",
                        image.width(),
                        image.height(),
                        crop.width,
                        crop.height
                    )));
                }
                let x = crop_offset(image.width() - crop.width);
                let y = crop_offset(image.height() - crop.height);
                imageops::crop_imm(&image, x, y, crop.width, crop.height).to_image()
            }
            None => image,
        };
        Ok(self.normalize(&image))
    }

    fn normalize<P>(&self, image: &ImageBuffer<P, Vec<u8>>) -> (Vec<usize>, Vec<f32>)
    where
        P: Pixel<Subpixel = u8>,
    {
        let c = usize::from(P::CHANNEL_COUNT);
        let (w, h) = (image.width() as usize, image.height() as usize);
        let pick = |values: &[f32], ch: usize| values.get(ch).or(values.first()).copied();
        let mean: Vec<f32> = (0..c)
            .map(|ch| pick(&self.mean, ch).unwrap_or(0.0))
            .collect();
        let std: Vec<f32> = (0..c)
            .map(|ch| pick(&self.std, ch).unwrap_or(1.0))
            .collect();
        let reversed = self.channel_order == ChannelOrder::Bgr;

        let mut out = vec![0.0f32; c * h * w];
        for (pixel_index, pixel) in image.as_raw().chunks_exact(c).enumerate() {
            for (ch, (m, s)) in mean.iter().zip(&std).enumerate() {
                let source = if reversed { c - 1 - ch } else { ch };
                let value = pixel.get(source).copied().unwrap_or(0);
                let x = (f32::from(value) * self.scale - m) / s;
                let index = match self.layout {
                    Layout::Nhwc => pixel_index * c + ch,
                    Layout::Nchw => ch * h * w + pixel_index,
                };
                if let Some(slot) = out.get_mut(index) {
                    *slot = x;
                }
            }
        }
        let shape = match self.layout {
            Layout::Nchw => vec![c, h, w],
            Layout::Nhwc => vec![h, w, c],
        };
        (shape, out)
    }
}

/// (width, height) after resizing.
fn resized_size(resize: Resize, width: u32, height: u32) -> (u32, u32) {
    match resize {
        Resize::Exact(s) => (s.width, s.height),
        Resize::ShorterSide(side) => {
            // torchvision: the long side is truncated, int(side * long / short).
            let scale_long = |long: u32, short: u32| {
                (u64::from(side) * u64::from(long) / u64::from(short.max(1))).max(1)
            };
            let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            if width <= height {
                (side, clamp(scale_long(height, width)))
            } else {
                (clamp(scale_long(width, height)), side)
            }
        }
    }
}

/// torchvision's `int(round(diff / 2))`, Python rounding half to even, so crops match it.
fn crop_offset(diff: u32) -> u32 {
    let half = diff / 2;
    if diff % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    fn parse(text: &str) -> Result<Preprocess> {
        Preprocess::parse("p/preprocess.json", text)
    }

    #[test]
    fn defaults_and_full_spec() {
        assert_eq!(parse("{}").unwrap(), Preprocess::default());
        let p = parse(
            r#"{"resize": {"height": 40, "width": 30}, "center_crop": {"height": 32, "width": 24},
                "scale": 1.0, "mean": [1, 2, 3], "std": [4], "channel_order": "bgr",
                "layout": "nhwc"}"#,
        )
        .unwrap();
        assert_eq!(
            p.resize,
            Some(Resize::Exact(Size {
                height: 40,
                width: 30
            }))
        );
        assert_eq!(p.channel_order, ChannelOrder::Bgr);
        assert_eq!(p.layout, Layout::Nhwc);
        let p = parse(r#"{"resize": {"shorter_side": 256}, "resize": null}"#);
        assert!(p.is_err(), "duplicate fields are rejected by serde");
        let p = parse(r#"{"resize": {"shorter_side": 256}}"#).unwrap();
        assert_eq!(p.resize, Some(Resize::ShorterSide(256)));
        // Serializes back to the same JSON shape.
        let back: Preprocess = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = parse(r#"{"mena": [0.5]}"#).unwrap_err().to_string();
        assert!(
            e.contains("p/preprocess.json") && e.contains("unknown field `mena`"),
            "{e}"
        );
        let e = parse(r#"{"mean": [0.1, 0.2]}"#).unwrap_err().to_string();
        assert!(e.contains("'mean' has 2 values; expected 1 or 3"), "{e}");
        let e = parse(r#"{"std": [0]}"#).unwrap_err().to_string();
        assert!(e.contains("'std' contains 0"), "{e}");
        let e = parse(r#"{"channel_order": "rgba"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rgba"), "{e}");
        let e = parse(r#"{"resize": {"height": 3}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'resize'"), "{e}");
        let e = parse(r#"{"center_crop": {"height": 3, "width": 0}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'center_crop' has a zero size"), "{e}");
        let e = parse(r#"{"center_crop": {"height": 3, "widht": 3}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("widht"), "{e}");
    }

    #[test]
    fn normalizes_in_nchw_and_nhwc_with_bgr() {
        // 2×1 image: pixel 0 = (10, 20, 30), pixel 1 = (40, 50, 60).
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([10, 20, 30]));
        img.put_pixel(1, 0, Rgb([40, 50, 60]));
        let p = Preprocess {
            scale: 1.0,
            mean: vec![1.0, 2.0, 3.0],
            std: vec![1.0, 2.0, 4.0],
            ..Preprocess::default()
        };
        let (shape, v) = p
            .apply("a.png", DynamicImage::ImageRgb8(img.clone()))
            .unwrap();
        assert_eq!(shape, vec![3, 1, 2]);
        assert_eq!(v, vec![9.0, 39.0, 9.0, 24.0, 6.75, 14.25]);

        let p = Preprocess {
            channel_order: ChannelOrder::Bgr,
            layout: Layout::Nhwc,
            ..p
        };
        let (shape, v) = p.apply("a.png", DynamicImage::ImageRgb8(img)).unwrap();
        assert_eq!(shape, vec![1, 2, 3]);
        // Output channel 0 is blue, normalized with mean[0]/std[0].
        assert_eq!(v, vec![29.0, 9.0, 1.75, 59.0, 24.0, 9.25]);
    }

    #[test]
    fn gray_default_scale() {
        let img = GrayImage::from_pixel(3, 2, Luma([255]));
        let p = Preprocess {
            channel_order: ChannelOrder::Gray,
            ..Preprocess::default()
        };
        let (shape, v) = p.apply("g.png", DynamicImage::ImageLuma8(img)).unwrap();
        assert_eq!(shape, vec![1, 2, 3]);
        assert!(v.iter().all(|&x| (x - 1.0).abs() < 1e-6));
    }

    #[test]
    fn resize_then_center_crop() {
        // Columns 0..8 with value 10·x; crop the middle 4 columns of a 8×6 image.
        let img = GrayImage::from_fn(8, 6, |x, _| Luma([(x * 10) as u8]));
        let p = Preprocess {
            center_crop: Some(Size {
                height: 2,
                width: 4,
            }),
            scale: 1.0,
            channel_order: ChannelOrder::Gray,
            ..Preprocess::default()
        };
        let (shape, v) = p
            .apply("c.png", DynamicImage::ImageLuma8(img.clone()))
            .unwrap();
        assert_eq!(shape, vec![1, 2, 4]);
        assert_eq!(&v[..4], &[20.0, 30.0, 40.0, 50.0]);

        let p = Preprocess {
            resize: Some(Resize::Exact(Size {
                height: 3,
                width: 4,
            })),
            center_crop: None,
            ..p
        };
        let (shape, v) = p.apply("c.png", DynamicImage::ImageLuma8(img)).unwrap();
        assert_eq!(shape, vec![1, 3, 4]);
        // Bilinear downscale by 2 of a linear ramp keeps it monotone and inside the range.
        assert!(v[..4].windows(2).all(|w| w[0] < w[1]), "{v:?}");
        assert!(v.iter().all(|&x| (0.0..=70.0).contains(&x)));
    }

    #[test]
    fn crop_larger_than_image_names_the_file() {
        let p = Preprocess {
            center_crop: Some(Size {
                height: 10,
                width: 10,
            }),
            ..Preprocess::default()
        };
        let e = p
            .apply("cls/a.png", DynamicImage::ImageRgb8(RgbImage::new(4, 4)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cls/a.png") && e.contains("smaller than center_crop"),
            "{e}"
        );
    }

    #[test]
    fn shorter_side_and_crop_offsets_follow_torchvision() {
        assert_eq!(resized_size(Resize::ShorterSide(256), 500, 375), (341, 256));
        assert_eq!(resized_size(Resize::ShorterSide(256), 375, 500), (256, 341));
        assert_eq!(resized_size(Resize::ShorterSide(10), 10, 10), (10, 10));
        // Python: round(0.5)=0, round(1.5)=2, round(2.5)=2, round(3.5)=4.
        let offsets: Vec<u32> = [1, 3, 5, 7, 4].into_iter().map(crop_offset).collect();
        assert_eq!(offsets, vec![0, 2, 2, 4, 2]);
    }
}
