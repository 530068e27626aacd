//! Training-batch augmentation for image inputs: random integer shifts (zero fill) and
//! horizontal flips, drawn per sample from a seeded generator so a run repeats exactly.
//! Applied to the training batches only, never to the samples that score.

use crate::data::SplitMix64;
use serde::{Deserialize, Serialize};

/// What to do to each training sample. The default does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Augment {
    /// Largest shift in pixels along each spatial axis (0: none); vacated pixels are 0.
    #[serde(default)]
    pub shift: usize,
    /// Mirror half of the samples left to right (wrong for digits or text: off by default).
    #[serde(default)]
    pub flip: bool,
}

/// Where a 4-D image batch keeps its channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageLayout {
    Nchw,
    Nhwc,
}

impl Augment {
    pub fn is_on(&self) -> bool {
        self.shift > 0 || self.flip
    }

    /// How the settings read in a note, e.g. `shift ±1 px, flip`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.shift > 0 {
            parts.push(format!("shift ±{} px", self.shift));
        }
        if self.flip {
            parts.push("horizontal flip".to_string());
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    /// Augment `batch` (`[N, C, H, W]` or `[N, H, W, C]`, row-major) in place, one draw
    /// per sample from `rng`.
    pub fn apply(
        &self,
        batch: &mut [f32],
        shape: &[usize],
        layout: ImageLayout,
        rng: &mut SplitMix64,
    ) {
        let [n, a, b, c] = [shape[0], shape[1], shape[2], shape[3]];
        let (channels, h, w) = match layout {
            ImageLayout::Nchw => (a, b, c),
            ImageLayout::Nhwc => (c, a, b),
        };
        let per = channels * h * w;
        let mut scratch = vec![0f32; per];
        let span = 2 * self.shift as u64 + 1;
        for sample in batch.chunks_exact_mut(per).take(n) {
            let dy = (rng.next_u64() % span) as isize - self.shift as isize;
            let dx = (rng.next_u64() % span) as isize - self.shift as isize;
            let flip = self.flip && rng.next_u64() & 1 == 1;
            scratch.copy_from_slice(sample);
            let at = |ch: usize, y: usize, x: usize| match layout {
                ImageLayout::Nchw => (ch * h + y) * w + x,
                ImageLayout::Nhwc => (y * w + x) * channels + ch,
            };
            for y in 0..h {
                for x in 0..w {
                    // Output (y, x) reads input (y − dy, x' − dx), x' the mirrored column.
                    let col = if flip { w - 1 - x } else { x };
                    let (sy, sx) = (y as isize - dy, col as isize - dx);
                    let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx);
                    for ch in 0..channels {
                        sample[at(ch, y, x)] = if inside {
                            scratch[at(ch, sy as usize, sx as usize)]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// The layout of an image input with per-sample shape `sample` (`[C, H, W]` or `[H, W, C]`),
/// or why it is not one: augmentation needs a 4-D batch with a small channel axis.
pub fn image_layout(sample: &[usize]) -> Result<ImageLayout, String> {
    let small = |c: usize| (1..=4).contains(&c);
    match sample {
        [c, h, w] if small(*c) && *h > 1 && *w > 1 => Ok(ImageLayout::Nchw),
        [h, w, c] if small(*c) && *h > 1 && *w > 1 => Ok(ImageLayout::Nhwc),
        _ => Err(format!(
            "samples of shape {sample:?} are not images ([C, H, W] or [H, W, C] with 1–4 channels)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(c: usize, h: usize, w: usize) -> Vec<f32> {
        (0..c * h * w).map(|i| i as f32 + 1.0).collect()
    }

    #[test]
    fn no_augmentation_leaves_the_batch_alone() {
        let mut x = ramp(2, 4, 5);
        let before = x.clone();
        Augment::default().apply(&mut x, &[1, 2, 4, 5], ImageLayout::Nchw, &mut SplitMix64(3));
        assert_eq!(x, before);
    }

    /// `image` (h × w) moved by (dy, dx), zeros where nothing moved in.
    fn shifted(image: &[f32], h: usize, w: usize, dy: isize, dx: isize) -> Vec<f32> {
        let mut out = vec![0.0; h * w];
        for y in 0..h as isize {
            for x in 0..w as isize {
                let (sy, sx) = (y - dy, x - dx);
                if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                    out[(y * w as isize + x) as usize] = image[(sy * w as isize + sx) as usize];
                }
            }
        }
        out
    }

    #[test]
    fn a_shift_moves_the_whole_image_and_fills_zeros() {
        let (h, w) = (6, 7);
        let aug = Augment {
            shift: 2,
            flip: false,
        };
        let original = ramp(1, h, w);
        let mut moved = 0;
        for seed in 0..20 {
            let mut x = original.clone();
            aug.apply(
                &mut x,
                &[1, 1, h, w],
                ImageLayout::Nchw,
                &mut SplitMix64(seed),
            );
            let offsets: Vec<(isize, isize)> = (-2..=2)
                .flat_map(|dy| (-2..=2).map(move |dx| (dy, dx)))
                .filter(|&(dy, dx)| x == shifted(&original, h, w, dy, dx))
                .collect();
            assert_eq!(offsets.len(), 1, "seed {seed}: not one shift of ±2 px");
            moved += usize::from(offsets[0] != (0, 0));
        }
        assert!(moved >= 10, "only {moved} of 20 draws moved the image");
    }

    #[test]
    fn flips_mirror_rows_in_both_layouts() {
        let flip = Augment {
            shift: 0,
            flip: true,
        };
        let (h, w, c) = (3, 4, 2);
        let mut flipped = 0;
        for seed in 0..16 {
            let original = ramp(c, h, w);
            let mut x = original.clone();
            flip.apply(
                &mut x,
                &[1, c, h, w],
                ImageLayout::Nchw,
                &mut SplitMix64(seed),
            );
            if x != original {
                flipped += 1;
                for ch in 0..c {
                    for y in 0..h {
                        for xx in 0..w {
                            assert_eq!(
                                x[(ch * h + y) * w + xx],
                                original[(ch * h + y) * w + (w - 1 - xx)]
                            );
                        }
                    }
                }
            }
            // NHWC: the same draw mirrors the same way, channels kept together.
            let nhwc: Vec<f32> = (0..h * w * c).map(|i| i as f32).collect();
            let mut y = nhwc.clone();
            flip.apply(
                &mut y,
                &[1, h, w, c],
                ImageLayout::Nhwc,
                &mut SplitMix64(seed),
            );
            if y != nhwc {
                assert_eq!(y[0], nhwc[(w - 1) * c]);
                assert_eq!(y[1], nhwc[(w - 1) * c + 1]);
            }
        }
        assert!((4..=12).contains(&flipped), "{flipped} of 16 flipped");
    }

    #[test]
    fn the_same_seed_gives_the_same_batch() {
        let aug = Augment {
            shift: 1,
            flip: true,
        };
        let run = |seed| {
            let mut x = ramp(1, 5, 5).repeat(4);
            aug.apply(
                &mut x,
                &[4, 1, 5, 5],
                ImageLayout::Nchw,
                &mut SplitMix64(seed),
            );
            x
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn only_image_shapes_have_a_layout() {
        assert_eq!(image_layout(&[1, 16, 16]), Ok(ImageLayout::Nchw));
        assert_eq!(image_layout(&[32, 32, 3]), Ok(ImageLayout::Nhwc));
        assert!(image_layout(&[40]).is_err());
        assert!(image_layout(&[20, 80]).is_err());
        let msg = image_layout(&[64, 8, 8]).unwrap_err();
        assert!(msg.contains("[64, 8, 8]"), "{msg}");
    }
}
