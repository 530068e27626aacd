//! How a layer's weight tensor maps onto output and input channels, and the per-channel
//! operations the fixes need (ranges, scaling, a weighted sum over inputs). Groups are
//! resolved here once, so BN folding, CLE and HBA never index a grouped weight by hand.

use crate::{Error, Result};

/// The weight layouts of the layers the fixes edit. Element order is ONNX's (row-major).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Conv `[Cout, Cin/g, k…]`; also Gemm with `transB=1` (`[N, K]`, one group, k = 1).
    Rows {
        cout: usize,
        cin_g: usize,
        groups: usize,
        kernel: usize,
    },
    /// ConvTranspose `[Cin, Cout/g, k…]`.
    Transposed {
        cin: usize,
        cout_g: usize,
        groups: usize,
        kernel: usize,
    },
    /// Gemm with `transB=0`: `[K, N]`.
    Cols { k: usize, n: usize },
}

fn max_abs(s: &[f32]) -> f32 {
    s.iter().fold(0.0f32, |m, w| m.max(w.abs()))
}

fn kernel_size(shape: &[usize]) -> usize {
    shape[2..].iter().product()
}

impl Layout {
    /// A Conv weight of `shape` with `groups` groups; `what` names the layer in errors.
    pub(crate) fn conv(shape: &[usize], groups: usize, what: &str) -> Result<Layout> {
        if shape.len() < 3 || groups == 0 || !shape[0].is_multiple_of(groups) {
            return Err(Error::input(format!(
                "{what}: Conv weight of shape {shape:?} does not fit group={groups}"
            )));
        }
        Ok(Layout::Rows {
            cout: shape[0],
            cin_g: shape[1],
            groups,
            kernel: kernel_size(shape),
        })
    }

    pub(crate) fn conv_transpose(shape: &[usize], groups: usize, what: &str) -> Result<Layout> {
        if shape.len() < 3 || groups == 0 || !shape[0].is_multiple_of(groups) {
            return Err(Error::input(format!(
                "{what}: ConvTranspose weight of shape {shape:?} does not fit group={groups}"
            )));
        }
        Ok(Layout::Transposed {
            cin: shape[0],
            cout_g: shape[1],
            groups,
            kernel: kernel_size(shape),
        })
    }

    pub(crate) fn gemm(shape: &[usize], trans_b: bool, what: &str) -> Result<Layout> {
        if shape.len() != 2 {
            return Err(Error::input(format!(
                "{what}: Gemm weight of shape {shape:?} is not 2-D"
            )));
        }
        Ok(if trans_b {
            Layout::Rows {
                cout: shape[0],
                cin_g: shape[1],
                groups: 1,
                kernel: 1,
            }
        } else {
            Layout::Cols {
                k: shape[0],
                n: shape[1],
            }
        })
    }

    pub(crate) fn out_channels(&self) -> usize {
        match *self {
            Layout::Rows { cout, .. } => cout,
            Layout::Transposed { cout_g, groups, .. } => cout_g * groups,
            Layout::Cols { n, .. } => n,
        }
    }

    pub(crate) fn in_channels(&self) -> usize {
        match *self {
            Layout::Rows { cin_g, groups, .. } => cin_g * groups,
            Layout::Transposed { cin, .. } => cin,
            Layout::Cols { k, .. } => k,
        }
    }

    /// One group per channel, as many outputs as inputs: the middle of a Conv→DWConv→Conv.
    pub(crate) fn is_depthwise(&self) -> bool {
        matches!(*self, Layout::Rows { cout, cin_g: 1, groups, .. } if groups == cout && groups > 1)
    }

    fn len(&self) -> usize {
        match *self {
            Layout::Rows {
                cout,
                cin_g,
                kernel,
                ..
            } => cout * cin_g * kernel,
            Layout::Transposed {
                cin,
                cout_g,
                kernel,
                ..
            } => cin * cout_g * kernel,
            Layout::Cols { k, n } => k * n,
        }
    }

    /// Call `f(out, in, span)` for every (output, input) pair, `span` the positions of its
    /// kernel taps in the flat weight; in memory order.
    fn spans(&self, mut f: impl FnMut(usize, usize, std::ops::Range<usize>)) {
        if let Some((cout, cin_g, kernel, cout_g)) = self.rows() {
            for o in 0..cout {
                let first_in = (o / cout_g) * cin_g;
                for li in 0..cin_g {
                    let at = (o * cin_g + li) * kernel;
                    f(o, first_in + li, at..at + kernel);
                }
            }
            return;
        }
        match *self {
            Layout::Rows { .. } => {} // done above
            Layout::Transposed {
                cin,
                cout_g,
                groups,
                kernel,
            } => {
                let cin_g = (cin / groups).max(1);
                for i in 0..cin {
                    let first_out = (i / cin_g) * cout_g;
                    for j in 0..cout_g {
                        let at = (i * cout_g + j) * kernel;
                        f(first_out + j, i, at..at + kernel);
                    }
                }
            }
            Layout::Cols { k, n } => {
                for i in 0..k {
                    for o in 0..n {
                        let at = i * n + o;
                        f(o, i, at..at + 1);
                    }
                }
            }
        }
    }

    /// Call `f(out, in, w)` for every element.
    pub(crate) fn for_each(&self, data: &[f32], mut f: impl FnMut(usize, usize, f32)) {
        debug_assert_eq!(data.len(), self.len());
        self.spans(|o, i, span| data[span].iter().for_each(|&w| f(o, i, w)));
    }

    /// Call `f(out, in, &mut w)` for every element.
    pub(crate) fn for_each_mut(&self, data: &mut [f32], mut f: impl FnMut(usize, usize, &mut f32)) {
        debug_assert_eq!(data.len(), self.len());
        self.spans(|o, i, span| data[span].iter_mut().for_each(|w| f(o, i, w)));
    }

    /// Conv-like rows: (outputs, inputs per group, kernel taps, outputs per group).
    fn rows(&self) -> Option<(usize, usize, usize, usize)> {
        match *self {
            Layout::Rows {
                cout,
                cin_g,
                groups,
                kernel,
            } => Some((cout, cin_g, kernel, (cout / groups).max(1))),
            _ => None,
        }
    }

    /// Length of one output row, for the Conv-like layouts.
    fn row_len(&self) -> Option<usize> {
        self.rows().map(|(_, cin_g, kernel, _)| cin_g * kernel)
    }

    /// The same channels with one tap per (output, input) pair: the layout of [`Layout::peaks`].
    pub(crate) fn reduced(&self) -> Layout {
        match *self {
            Layout::Rows {
                cout,
                cin_g,
                groups,
                ..
            } => Layout::Rows {
                cout,
                cin_g,
                groups,
                kernel: 1,
            },
            Layout::Transposed {
                cin,
                cout_g,
                groups,
                ..
            } => Layout::Transposed {
                cin,
                cout_g,
                groups,
                kernel: 1,
            },
            cols @ Layout::Cols { .. } => cols,
        }
    }

    /// max |w| over each (output, input) pair's kernel taps, in the order of
    /// [`Layout::reduced`]. Per-channel ranges, and their change under positive per-channel
    /// factors, depend on these alone, so CLE iterates on them instead of the weight.
    pub(crate) fn peaks(&self, data: &[f32]) -> Vec<f32> {
        debug_assert_eq!(data.len(), self.len());
        let kernel = match *self {
            Layout::Rows { kernel, .. } | Layout::Transposed { kernel, .. } => kernel,
            Layout::Cols { .. } => 1,
        };
        data.chunks_exact(kernel.max(1)).map(max_abs).collect()
    }

    /// Multiply every weight by `out[o] · in[i]` of its output and input channel.
    pub(crate) fn scale_both(&self, data: &mut [f32], out: &[f32], inp: &[f32]) {
        if let Some((_, cin_g, kernel, cout_g)) = self.rows() {
            for (o, row) in data.chunks_exact_mut(cin_g * kernel).enumerate() {
                let first = (o / cout_g) * cin_g;
                for (taps, f) in row.chunks_exact_mut(kernel).zip(&inp[first..first + cin_g]) {
                    let f = out[o] * f;
                    taps.iter_mut().for_each(|w| *w *= f);
                }
            }
            return;
        }
        self.for_each_mut(data, |o, i, w| *w *= out[o] * inp[i]);
    }

    /// `[min, max]` per output channel.
    pub(crate) fn out_min_max(&self, data: &[f32]) -> Vec<[f32; 2]> {
        let widen = |[lo, hi]: [f32; 2], w: f32| [lo.min(w), hi.max(w)];
        let empty = [f32::INFINITY, f32::NEG_INFINITY];
        if let Some(len) = self.row_len() {
            return data
                .chunks_exact(len)
                .map(|row| row.iter().fold(empty, |m, &w| widen(m, w)))
                .collect();
        }
        let mut r = vec![empty; self.out_channels()];
        self.for_each(data, |o, _, w| r[o] = widen(r[o], w));
        r
    }

    /// max |w| per output channel.
    pub(crate) fn out_ranges(&self, data: &[f32]) -> Vec<f32> {
        // Rows are contiguous: the common case runs as plain slice loops.
        if let Some(len) = self.row_len() {
            return data.chunks_exact(len).map(max_abs).collect();
        }
        let mut r = vec![0.0f32; self.out_channels()];
        self.for_each(data, |o, _, w| r[o] = r[o].max(w.abs()));
        r
    }

    /// max |w| per input channel.
    pub(crate) fn in_ranges(&self, data: &[f32]) -> Vec<f32> {
        let mut r = vec![0.0f32; self.in_channels()];
        if let Some((_, cin_g, kernel, cout_g)) = self.rows() {
            let len = cin_g * kernel;
            for (o, row) in data.chunks_exact(len).enumerate() {
                let first = (o / cout_g) * cin_g;
                for (taps, m) in row.chunks_exact(kernel).zip(&mut r[first..first + cin_g]) {
                    *m = m.max(max_abs(taps));
                }
            }
            return r;
        }
        self.for_each(data, |_, i, w| r[i] = r[i].max(w.abs()));
        r
    }

    /// Multiply output channel `o` by `factor[o]`.
    pub(crate) fn scale_out(&self, data: &mut [f32], factor: &[f32]) {
        if let Some(len) = self.row_len() {
            for (row, f) in data.chunks_exact_mut(len).zip(factor) {
                row.iter_mut().for_each(|w| *w *= f);
            }
            return;
        }
        self.for_each_mut(data, |o, _, w| *w *= factor[o]);
    }

    /// Multiply output channel `o` by `factor[o]`; returns the new max |w| per input
    /// channel, found in the same pass.
    pub(crate) fn scale_out_in_ranges(&self, data: &mut [f32], factor: &[f32]) -> Vec<f32> {
        let mut r = vec![0.0f32; self.in_channels()];
        if let Some((_, cin_g, kernel, cout_g)) = self.rows() {
            for (o, row) in data.chunks_exact_mut(cin_g * kernel).enumerate() {
                let (f, first) = (factor[o], (o / cout_g) * cin_g);
                for (taps, m) in row
                    .chunks_exact_mut(kernel)
                    .zip(&mut r[first..first + cin_g])
                {
                    taps.iter_mut().for_each(|w| *w *= f);
                    *m = m.max(max_abs(taps));
                }
            }
            return r;
        }
        self.for_each_mut(data, |o, i, w| {
            *w *= factor[o];
            r[i] = r[i].max(w.abs());
        });
        r
    }

    /// Multiply input channel `i` by `factor[i]`; returns the new max |w| per output
    /// channel, found in the same pass.
    pub(crate) fn scale_in_out_ranges(&self, data: &mut [f32], factor: &[f32]) -> Vec<f32> {
        let mut r = vec![0.0f32; self.out_channels()];
        if let Some((_, cin_g, kernel, cout_g)) = self.rows() {
            for (o, row) in data.chunks_exact_mut(cin_g * kernel).enumerate() {
                let first = (o / cout_g) * cin_g;
                for (taps, f) in row
                    .chunks_exact_mut(kernel)
                    .zip(&factor[first..first + cin_g])
                {
                    taps.iter_mut().for_each(|w| *w *= f);
                }
                r[o] = max_abs(row);
            }
            return r;
        }
        self.for_each_mut(data, |o, i, w| {
            *w *= factor[i];
            r[o] = r[o].max(w.abs());
        });
        r
    }

    /// Per output channel, Σ over its inputs and kernel taps of w · `c[input]`: what a
    /// constant `c` per input channel adds to each output (away from zero padding).
    pub(crate) fn weighted_in_sum(&self, data: &[f32], c: &[f32]) -> Vec<f32> {
        let mut acc = vec![0.0f64; self.out_channels()];
        self.for_each(data, |o, i, w| acc[o] += w as f64 * c[i] as f64);
        acc.into_iter().map(|v| v as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_conv_maps_inputs_to_their_group() {
        // 4 outputs, 2 groups of 2 inputs, 1 tap: output o reads inputs of group o / 2.
        let l = Layout::conv(&[4, 2, 1], 2, "g").unwrap();
        let mut seen = vec![];
        l.for_each(&[0.0; 8], |o, i, _| seen.push((o, i)));
        assert_eq!(
            seen,
            [
                (0, 0),
                (0, 1),
                (1, 0),
                (1, 1),
                (2, 2),
                (2, 3),
                (3, 2),
                (3, 3)
            ]
        );
        assert_eq!(l.in_channels(), 4);
    }

    #[test]
    fn transposed_and_column_layouts_find_their_output_channels() {
        // ConvTranspose [Cin=4, Cout/g=1, k=1], group 2: Cout = 2; input i → output i / 2.
        let t = Layout::conv_transpose(&[4, 1, 1], 2, "t").unwrap();
        let mut seen = vec![];
        t.for_each(&[0.0; 4], |o, i, _| seen.push((o, i)));
        assert_eq!(seen, [(0, 0), (0, 1), (1, 2), (1, 3)]);
        let c = Layout::gemm(&[2, 3], false, "c").unwrap();
        let w = [1.0, -5.0, 2.0, 3.0, 0.5, -4.0];
        assert_eq!(c.out_ranges(&w), [3.0, 5.0, 4.0]);
        assert_eq!(c.in_ranges(&w), [5.0, 4.0]);
        assert_eq!(c.weighted_in_sum(&w, &[1.0, 2.0]), [7.0, -4.0, -6.0]);
    }

    #[test]
    fn row_fast_paths_agree_with_the_generic_traversal() {
        // 6 outputs, 3 groups of 2 inputs, 2 taps.
        let l = Layout::conv(&[6, 2, 2], 3, "g").unwrap();
        let w: Vec<f32> = (0..24).map(|k| ((k * 7) % 11) as f32 - 5.0).collect();
        let (mut outs, mut ins) = (vec![0.0f32; 6], vec![0.0f32; 6]);
        l.for_each(&w, |o, i, v| {
            outs[o] = outs[o].max(v.abs());
            ins[i] = ins[i].max(v.abs());
        });
        assert_eq!(l.out_ranges(&w), outs);
        assert_eq!(l.in_ranges(&w), ins);
        let f: Vec<f32> = (1..=6).map(|k| k as f32).collect();
        let (mut a, mut b) = (w.clone(), w.clone());
        let outs_after = l.scale_in_out_ranges(&mut a, &f);
        l.for_each_mut(&mut b, |_, i, v| *v *= f[i]);
        assert_eq!(a, b);
        assert_eq!(outs_after, l.out_ranges(&b));
        let (mut a, mut b) = (w.clone(), w.clone());
        let ins_after = l.scale_out_in_ranges(&mut a, &f);
        l.for_each_mut(&mut b, |o, _, v| *v *= f[o]);
        assert_eq!(ins_after, l.in_ranges(&b));
        assert_eq!(a, b);
    }
}
