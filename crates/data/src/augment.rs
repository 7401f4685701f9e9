//! Image augmentations with torchvision's semantics, on planar RGB `f32` images in `[0, 1]`.
//!
//! Each transform is a plain function so it can be tested alone; a [`Pipeline`] chains them for
//! one view and an [`Augment`] holds the two pipelines of a preset (view 0, 2, … and view 1, 3, …),
//! the normalisation and the evaluation transform. Two presets
//! (docs/methods.md#augmentations-and-normalisation):
//! - `wmse` (the W-MSE authors' symmetric pipeline): `RandomApply(ColorJitter(0.4, 0.4, 0.4,
//!   0.1), p=0.8) → RandomGrayscale(0.1) → RandomResizedCrop(size, scale=(0.2, 1), ratio=(3/4,
//!   4/3), bicubic) → RandomHorizontalFlip(0.5)`, the same for every view;
//! - `fair` (Barlow Twins / VICReg, asymmetric): `RandomResizedCrop(size, scale=(0.08, 1),
//!   bicubic) → RandomHorizontalFlip(0.5) → RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), p=0.8) →
//!   RandomGrayscale(0.2) → GaussianBlur(σ ∈ [0.1, 2]) with p 1.0 / 0.1 → Solarize(128) with
//!   p 0.0 / 0.2`;
//!
//! then `Normalize(mean, std)` of the dataset.

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A planar RGB image: three `height × width` planes, values in `[0, 1]` until normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Rgb {
    /// From planar bytes (as the CIFAR binary stores them), scaled to `[0, 1]` like `ToTensor`.
    pub fn from_planar_u8(bytes: &[u8], height: usize, width: usize) -> Rgb {
        assert_eq!(bytes.len(), 3 * height * width, "planar RGB needs 3·H·W bytes");
        Rgb { height, width, data: bytes.iter().map(|&b| b as f32 / 255.0).collect() }
    }

    /// From interleaved RGB bytes (as image decoders write them), scaled to `[0, 1]`.
    pub fn from_interleaved_u8(bytes: &[u8], height: usize, width: usize) -> Rgb {
        let n = height * width;
        assert_eq!(bytes.len(), 3 * n, "interleaved RGB needs 3·H·W bytes");
        let mut data = vec![0f32; 3 * n];
        let (r, gb) = data.split_at_mut(n);
        let (g, b) = gb.split_at_mut(n);
        for (i, px) in bytes.chunks_exact(3).enumerate() {
            r[i] = px[0] as f32 / 255.0;
            g[i] = px[1] as f32 / 255.0;
            b[i] = px[2] as f32 / 255.0;
        }
        Rgb { height, width, data }
    }

    fn plane_len(&self) -> usize {
        self.height * self.width
    }
}

/// ITU-R 601-2 luma, as PIL's `convert("L")` and torchvision's `rgb_to_grayscale` use.
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

fn luma_plane(img: &Rgb) -> Vec<f32> {
    let n = img.plane_len();
    let (r, rest) = img.data.split_at(n);
    let (g, b) = rest.split_at(n);
    (0..n).map(|i| LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i]).collect()
}

/// `clamp(f·x + (1 − f)·other, 0, 1)` with `other` given per pixel of a plane (or a constant).
fn blend(img: &mut Rgb, factor: f32, other: impl Fn(usize) -> f32) {
    let n = img.plane_len();
    for (i, v) in img.data.iter_mut().enumerate() {
        *v = (factor * *v + (1.0 - factor) * other(i % n)).clamp(0.0, 1.0);
    }
}

/// Brightness: blend with black.
pub fn adjust_brightness(img: &mut Rgb, factor: f32) {
    blend(img, factor, |_| 0.0);
}

/// Contrast: blend with the mean of the image's grayscale version.
pub fn adjust_contrast(img: &mut Rgb, factor: f32) {
    let gray = luma_plane(img);
    let mean = gray.iter().sum::<f32>() / gray.len() as f32;
    blend(img, factor, |_| mean);
}

/// Saturation: blend with the image's grayscale version, pixel by pixel.
pub fn adjust_saturation(img: &mut Rgb, factor: f32) {
    let gray = luma_plane(img);
    blend(img, factor, |i| gray[i]);
}

/// Hue: rotate the hue channel of HSV by `factor` turns (`factor ∈ [−0.5, 0.5]`).
pub fn adjust_hue(img: &mut Rgb, factor: f32) {
    let n = img.plane_len();
    for i in 0..n {
        let (r, g, b) = (img.data[i], img.data[n + i], img.data[2 * n + i]);
        let (h, s, v) = rgb_to_hsv(r, g, b);
        let (r, g, b) = hsv_to_rgb((h + factor).rem_euclid(1.0), s, v);
        img.data[i] = r;
        img.data[n + i] = g;
        img.data[2 * n + i] = b;
    }
}

/// HSV with every component in `[0, 1]` (torchvision's `_rgb2hsv`).
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let s = if max > 0.0 { delta / max } else { 0.0 };
    let h = if delta == 0.0 {
        0.0
    } else if max == r {
        ((g - b) / delta).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / delta + 2.0) / 6.0
    } else {
        ((r - g) / delta + 4.0) / 6.0
    };
    (h, s, max)
}

/// Inverse of [`rgb_to_hsv`].
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = (h * 6.0).rem_euclid(6.0);
    let sector = h6.floor();
    let f = h6 - sector;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match sector as u32 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Replace every channel by the luma (three identical planes, as `RandomGrayscale` keeps 3).
pub fn to_grayscale(img: &mut Rgb) {
    let gray = luma_plane(img);
    let n = img.plane_len();
    for c in 0..3 {
        img.data[c * n..(c + 1) * n].copy_from_slice(&gray);
    }
}

/// Mirror left to right.
pub fn hflip(img: &mut Rgb) {
    for row in img.data.chunks_mut(img.width) {
        row.reverse();
    }
}

/// `(x − mean_c) / std_c` per channel.
pub fn normalise(img: &mut Rgb, mean: [f32; 3], std: [f32; 3]) {
    let n = img.plane_len();
    for c in 0..3 {
        for v in &mut img.data[c * n..(c + 1) * n] {
            *v = (*v - mean[c]) / std[c];
        }
    }
}

/// A crop window: top row, left column, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a random area fraction in `scale`
/// and log-uniform aspect ratio in `ratio`, then a centre crop with the ratio clamped.
pub fn random_resized_crop_window(
    rng: &mut impl Rng,
    height: usize,
    width: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
) -> Window {
    let area = (height * width) as f32;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target_area * aspect).sqrt().round() as usize;
        let h = (target_area / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return Window { top, left, height: h, width: w };
        }
    }
    let in_ratio = width as f32 / height as f32;
    let (w, h) = if in_ratio < ratio.0 {
        (width, ((width as f32 / ratio.0).round() as usize).min(height))
    } else if in_ratio > ratio.1 {
        (((height as f32 * ratio.1).round() as usize).min(width), height)
    } else {
        (width, height)
    };
    Window { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

/// Keys's cubic convolution kernel with a = −0.5, the kernel PIL and torchvision call bicubic.
fn bicubic_kernel(x: f32) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Resampling weights along one axis, PIL's `precompute_coeffs`: the kernel is stretched by the
/// downscaling factor (antialiasing), clipped to the input and normalised to sum to one.
/// Returns, per output position, the first input index and the weights from there.
fn axis_weights(in_len: usize, out_len: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_len as f32 / out_len as f32;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_len)
        .map(|i| {
            let centre = (i as f32 + 0.5) * scale;
            let lo = ((centre - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((centre + support + 0.5).floor() as usize).min(in_len);
            let mut w: Vec<f32> = (lo..hi).map(|x| bicubic_kernel((x as f32 - centre + 0.5) / filter_scale)).collect();
            let total: f32 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (lo, w)
        })
        .collect()
}

/// Crop `window` out of `img` and resize it to `out_h × out_w` with bicubic resampling
/// (separable, horizontal pass first, as PIL does), clamped to `[0, 1]`.
pub fn resized_crop_bicubic(img: &Rgb, window: Window, out_h: usize, out_w: usize) -> Rgb {
    let wx = axis_weights(window.width, out_w);
    let wy = axis_weights(window.height, out_h);
    let n = img.plane_len();
    let mut out = vec![0.0f32; 3 * out_h * out_w];
    let mut tmp = vec![0.0f32; window.height * out_w];
    for c in 0..3 {
        let plane = &img.data[c * n..(c + 1) * n];
        for y in 0..window.height {
            let row = &plane[(window.top + y) * img.width + window.left..][..window.width];
            for (x, (lo, w)) in wx.iter().enumerate() {
                tmp[y * out_w + x] = w.iter().zip(&row[*lo..]).map(|(a, b)| a * b).sum();
            }
        }
        let dst = &mut out[c * out_h * out_w..(c + 1) * out_h * out_w];
        for (y, (lo, w)) in wy.iter().enumerate() {
            for x in 0..out_w {
                let v: f32 = w.iter().enumerate().map(|(k, a)| a * tmp[(lo + k) * out_w + x]).sum();
                dst[y * out_w + x] = v.clamp(0.0, 1.0);
            }
        }
    }
    Rgb { height: out_h, width: out_w, data: out }
}

/// `ColorJitter(brightness, contrast, saturation, hue)` applied with probability `p`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    pub p: f32,
}

impl ColorJitter {
    /// Draw the four factors, then apply the four adjustments in a random order (torchvision).
    pub fn apply(&self, img: &mut Rgb, rng: &mut impl Rng) {
        let factor = |rng: &mut _, s: f32| -> Option<f32> {
            (s > 0.0).then(|| Rng::random_range(rng, (1.0 - s).max(0.0)..=1.0 + s))
        };
        let b = factor(rng, self.brightness);
        let c = factor(rng, self.contrast);
        let s = factor(rng, self.saturation);
        let h = (self.hue > 0.0).then(|| rng.random_range(-self.hue..=self.hue));
        let mut order = [0u8, 1, 2, 3];
        order.shuffle(rng);
        for op in order {
            match op {
                0 => b.map(|f| adjust_brightness(img, f)),
                1 => c.map(|f| adjust_contrast(img, f)),
                2 => s.map(|f| adjust_saturation(img, f)),
                _ => h.map(|f| adjust_hue(img, f)),
            };
        }
    }
}

/// σ-Gaussian blur, separable, with a kernel of radius ⌈3σ⌉ (so the kernel holds all but
/// 0.3 % of the Gaussian, as PIL's `GaussianBlur(radius=σ)` the FAIR code uses) and reflect
/// padding at the borders (torchvision's `gaussian_blur`).
pub fn gaussian_blur(img: &mut Rgb, sigma: f32) {
    let radius = ((3.0 * sigma).ceil() as usize).max(1).min(img.height.min(img.width).saturating_sub(1));
    if radius == 0 {
        return;
    }
    let kernel: Vec<f32> = {
        let raw: Vec<f32> =
            (0..=2 * radius).map(|i| (-((i as f32 - radius as f32).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
        let total: f32 = raw.iter().sum();
        raw.into_iter().map(|v| v / total).collect()
    };
    // Reflect (without repeating the edge): index −1 → 1, n → n − 2.
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }) as usize
    };
    // Each pass adds the taps in kernel order into an accumulator that starts at zero, as a
    // per-pixel sum would, but a whole row at a time so the loops vectorise.
    let (h, w) = (img.height, img.width);
    let mut tmp = vec![0.0f32; h * w];
    let mut padded = vec![0.0f32; w + 2 * radius];
    for plane in img.data.chunks_mut(h * w) {
        for (src, out) in plane.chunks(w).zip(tmp.chunks_mut(w)) {
            for (p, v) in padded.iter_mut().enumerate() {
                *v = src[reflect(p as isize - radius as isize, w)];
            }
            out.fill(0.0);
            for (k, kv) in kernel.iter().enumerate() {
                for (o, s) in out.iter_mut().zip(&padded[k..k + w]) {
                    *o += kv * s;
                }
            }
        }
        for (y, out) in plane.chunks_mut(w).enumerate() {
            out.fill(0.0);
            for (k, kv) in kernel.iter().enumerate() {
                let row = reflect(y as isize + k as isize - radius as isize, h);
                for (o, s) in out.iter_mut().zip(&tmp[row * w..(row + 1) * w]) {
                    *o += kv * s;
                }
            }
        }
    }
}

/// The threshold of PIL's `ImageOps.solarize(img, 128)` on values in `[0, 1]`.
pub const SOLARIZE_THRESHOLD: f32 = 128.0 / 255.0;

/// Invert every value at or above the threshold (PIL: `v if v < 128 else 255 − v`).
pub fn solarize(img: &mut Rgb) {
    for v in &mut img.data {
        if *v >= SOLARIZE_THRESHOLD - 1e-6 {
            *v = 1.0 - *v;
        }
    }
}

/// Resize the whole image so its shorter side is `resize` (bicubic), then cut the central
/// `crop × crop` square (torchvision's `Resize(resize)` then `CenterCrop(crop)`).
pub fn resize_centre_crop(img: &Rgb, resize: usize, crop: usize) -> Rgb {
    let (h, w) = (img.height, img.width);
    let (rh, rw) = if h <= w { (resize, resize * w / h) } else { (resize * h / w, resize) };
    let full = Window { top: 0, left: 0, height: h, width: w };
    let resized = resized_crop_bicubic(img, full, rh, rw);
    let top = ((rh - crop) as f32 / 2.0).round() as usize;
    let left = ((rw - crop) as f32 / 2.0).round() as usize;
    let mut data = Vec::with_capacity(3 * crop * crop);
    for plane in resized.data.chunks(rh * rw) {
        for y in top..top + crop {
            data.extend_from_slice(&plane[y * rw + left..y * rw + left + crop]);
        }
    }
    Rgb { height: crop, width: crop, data }
}

/// In which order a pipeline crops and colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// W-MSE: colour jitter, grayscale, then crop and flip.
    ColourFirst,
    /// FAIR: crop and flip, then colour jitter, grayscale, blur and solarisation.
    CropFirst,
}

/// One view's chain of augmentations, configured from an experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub order: Order,
    /// Output side in pixels (square crops).
    pub size: usize,
    /// Random resized crop: area fraction range.
    pub crop_scale: (f32, f32),
    /// Random resized crop: aspect ratio range.
    pub crop_ratio: (f32, f32),
    pub flip_p: f32,
    pub color_jitter: ColorJitter,
    pub grayscale_p: f32,
    /// Gaussian blur: probability and the range σ is drawn from uniformly.
    pub blur_p: f32,
    pub blur_sigma: (f32, f32),
    /// Solarisation (threshold 128) probability.
    pub solarize_p: f32,
}

/// A named set of augmentation defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The W-MSE authors' symmetric pipeline.
    Wmse,
    /// Barlow Twins' and VICReg's asymmetric pair.
    Fair,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Wmse => "wmse",
            Preset::Fair => "fair",
        }
    }
}

/// Everything a run does to pixels: the two view pipelines, the normalisation, and the
/// evaluation transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Which preset the defaults came from (every field below may still be overridden).
    pub preset: Preset,
    /// Views 0, 2, 4, …
    pub view_a: Pipeline,
    /// Views 1, 3, 5, …
    pub view_b: Pipeline,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Evaluation: resize the shorter side to this (bicubic), 0 = keep the stored size.
    pub eval_resize: usize,
    /// Evaluation: centre crop to this side, 0 = no crop.
    pub eval_crop: usize,
}

impl Pipeline {
    /// The W-MSE authors' pipeline at crop side `size`.
    pub fn wmse(size: usize) -> Pipeline {
        Pipeline {
            order: Order::ColourFirst,
            size,
            crop_scale: (0.2, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            color_jitter: ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 },
            grayscale_p: 0.1,
            blur_p: 0.0,
            blur_sigma: (0.1, 2.0),
            solarize_p: 0.0,
        }
    }

    /// One of the FAIR pair at crop side `size`: blur and solarisation probabilities differ.
    pub fn fair(size: usize, blur_p: f32, solarize_p: f32) -> Pipeline {
        Pipeline {
            order: Order::CropFirst,
            size,
            crop_scale: (0.08, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            color_jitter: ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1, p: 0.8 },
            grayscale_p: 0.2,
            blur_p,
            blur_sigma: (0.1, 2.0),
            solarize_p,
        }
    }

    /// Reject settings torchvision would reject, naming the field.
    pub fn validate(&self, view: &str) -> Result<()> {
        let bad = |field: &str, what: String| Err(Error::Augment(format!("{view}.{field}: {what}")));
        let j = &self.color_jitter;
        for (field, p) in [
            ("color_jitter.p", j.p),
            ("grayscale_p", self.grayscale_p),
            ("flip_p", self.flip_p),
            ("blur_p", self.blur_p),
            ("solarize_p", self.solarize_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, format!("a probability in [0, 1] expected, got {p}"));
            }
        }
        for (field, v) in [("brightness", j.brightness), ("contrast", j.contrast), ("saturation", j.saturation)] {
            if v < 0.0 || !v.is_finite() {
                return bad(&format!("color_jitter.{field}"), format!("a non-negative factor expected, got {v}"));
            }
        }
        if !(0.0..=0.5).contains(&j.hue) {
            return bad("color_jitter.hue", format!("a value in [0, 0.5] expected, got {}", j.hue));
        }
        let (lo, hi) = self.crop_scale;
        if !(0.0 < lo && lo <= hi && hi <= 1.0) {
            return bad("crop_scale", format!("0 < lo ≤ hi ≤ 1 expected, got ({lo}, {hi})"));
        }
        let (lo, hi) = self.crop_ratio;
        if !(0.0 < lo && lo <= hi) {
            return bad("crop_ratio", format!("0 < lo ≤ hi expected, got ({lo}, {hi})"));
        }
        let (lo, hi) = self.blur_sigma;
        if !(0.0 < lo && lo <= hi && hi.is_finite()) {
            return bad("blur_sigma", format!("0 < lo ≤ hi expected, got ({lo}, {hi})"));
        }
        if self.size == 0 {
            return bad("size", "a positive size expected, got 0".into());
        }
        Ok(())
    }

    /// One augmented view of `img` (values in `[0, 1]`, not normalised), all draws from `rng`.
    pub fn apply(&self, img: &Rgb, rng: &mut impl Rng) -> Rgb {
        if let Some(window) = self.first_window(img.height, img.width, rng) {
            return self.apply_in_window(img, window, rng);
        }
        // Colour first: the jitter's contrast blends with the whole image's mean grey.
        let mut x = img.clone();
        self.colour(&mut x, rng);
        let window = random_resized_crop_window(rng, x.height, x.width, self.crop_scale, self.crop_ratio);
        self.resize_and_flip(&x, window, rng)
    }

    /// The crop window a crop-first pipeline draws before anything else, for an image of
    /// `height × width`: what a decoder can be told before it decodes. `None` for a colour-first
    /// pipeline, which draws nothing before colouring the whole image.
    pub fn first_window(&self, height: usize, width: usize, rng: &mut impl Rng) -> Option<Window> {
        match self.order {
            Order::ColourFirst => None,
            Order::CropFirst => Some(random_resized_crop_window(rng, height, width, self.crop_scale, self.crop_ratio)),
        }
    }

    /// The rest of a crop-first [`apply`](Self::apply) once [`first_window`](Self::first_window)
    /// drew `window` from `rng`: `img` holds at least the window's pixels, at `window`.
    pub fn apply_in_window(&self, img: &Rgb, window: Window, rng: &mut impl Rng) -> Rgb {
        let mut x = self.resize_and_flip(img, window, rng);
        self.colour(&mut x, rng);
        if self.blur_p > 0.0 && rng.random::<f32>() < self.blur_p {
            let sigma = rng.random_range(self.blur_sigma.0..=self.blur_sigma.1);
            gaussian_blur(&mut x, sigma);
        }
        if self.solarize_p > 0.0 && rng.random::<f32>() < self.solarize_p {
            solarize(&mut x);
        }
        x
    }

    /// `window` of `img` resized to the view's side, then flipped with `flip_p`.
    fn resize_and_flip(&self, img: &Rgb, window: Window, rng: &mut impl Rng) -> Rgb {
        let mut x = resized_crop_bicubic(img, window, self.size, self.size);
        if rng.random::<f32>() < self.flip_p {
            hflip(&mut x);
        }
        x
    }

    /// Colour jitter with its probability, then greyscale with its own.
    fn colour(&self, x: &mut Rgb, rng: &mut impl Rng) {
        if rng.random::<f32>() < self.color_jitter.p {
            self.color_jitter.apply(x, rng);
        }
        if rng.random::<f32>() < self.grayscale_p {
            to_grayscale(x);
        }
    }
}

impl Augment {
    /// A preset's defaults for images cropped to `size`, normalised with `mean` and `std`.
    pub fn preset(preset: Preset, size: usize, mean: [f32; 3], std: [f32; 3]) -> Augment {
        let (view_a, view_b) = match preset {
            Preset::Wmse => (Pipeline::wmse(size), Pipeline::wmse(size)),
            Preset::Fair => (Pipeline::fair(size, 1.0, 0.0), Pipeline::fair(size, 0.1, 0.2)),
        };
        Augment { preset, view_a, view_b, mean, std, eval_resize: 0, eval_crop: 0 }
    }

    /// The W-MSE authors' CIFAR pipeline (docs/methods.md#the-wmse-preset) with the given
    /// normalisation.
    pub fn wmse_cifar(mean: [f32; 3], std: [f32; 3]) -> Augment {
        Augment::preset(Preset::Wmse, 32, mean, std)
    }

    /// The pipeline of view `v`.
    pub fn pipeline(&self, v: usize) -> &Pipeline {
        if v.is_multiple_of(2) {
            &self.view_a
        } else {
            &self.view_b
        }
    }

    /// Side of the training views.
    pub fn size(&self) -> usize {
        self.view_a.size
    }

    /// Side of the evaluation images, given the stored side.
    pub fn eval_size(&self, stored: usize) -> usize {
        match (self.eval_resize, self.eval_crop) {
            (_, c) if c > 0 => c,
            (r, _) if r > 0 => r,
            _ => stored,
        }
    }

    /// Reject settings torchvision would reject, naming the field.
    pub fn validate(&self) -> Result<()> {
        self.view_a.validate("view_a")?;
        self.view_b.validate("view_b")?;
        if self.view_a.size != self.view_b.size {
            return Err(Error::Augment(format!(
                "view_a.size {} and view_b.size {} differ: every view of a batch has one size",
                self.view_a.size, self.view_b.size
            )));
        }
        if self.std.iter().any(|s| *s <= 0.0) {
            return Err(Error::Augment(format!("std: positive values expected, got {:?}", self.std)));
        }
        if self.eval_crop > 0 && self.eval_resize > 0 && self.eval_crop > self.eval_resize {
            return Err(Error::Augment(format!(
                "eval_crop {} is larger than eval_resize {}",
                self.eval_crop, self.eval_resize
            )));
        }
        Ok(())
    }

    /// View `v` of `img`, augmented and normalised, all draws from `rng`.
    pub fn view(&self, v: usize, img: &Rgb, rng: &mut impl Rng) -> Rgb {
        let mut x = self.pipeline(v).apply(img, rng);
        normalise(&mut x, self.mean, self.std);
        x
    }

    /// View `v` finished from the `window` its crop-first pipeline drew first from `rng`
    /// ([`Pipeline::first_window`]), `img` holding at least the window: the same view as
    /// [`view`](Self::view) of the whole image when `img` has the whole image's pixels there.
    pub fn view_in_window(&self, v: usize, img: &Rgb, window: Window, rng: &mut impl Rng) -> Rgb {
        let mut x = self.pipeline(v).apply_in_window(img, window, rng);
        normalise(&mut x, self.mean, self.std);
        x
    }

    /// The evaluation image: resized and centre-cropped when configured, then normalised.
    pub fn eval(&self, img: &Rgb) -> Rgb {
        let mut x = match (self.eval_resize, self.eval_crop) {
            (0, 0) => img.clone(),
            (r, c) => {
                let r = if r == 0 { img.height.min(img.width) } else { r };
                resize_centre_crop(img, r, if c == 0 { r } else { c })
            }
        };
        normalise(&mut x, self.mean, self.std);
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ramp(h: usize, w: usize) -> Rgb {
        let n = h * w;
        let data = (0..3 * n).map(|i| ((i % n) % w) as f32 / (w - 1) as f32).collect();
        Rgb { height: h, width: w, data }
    }

    #[test]
    fn resize_to_same_size_is_identity() {
        let img = ramp(8, 8);
        let w = Window { top: 0, left: 0, height: 8, width: 8 };
        let out = resized_crop_bicubic(&img, w, 8, 8);
        for (a, b) in out.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn resize_keeps_constant_images_and_ramps_monotone() {
        let img = Rgb { height: 10, width: 10, data: vec![0.25; 300] };
        let out = resized_crop_bicubic(&img, Window { top: 1, left: 2, height: 7, width: 5 }, 32, 32);
        assert!(out.data.iter().all(|v| (v - 0.25).abs() < 1e-6));
        let out = resized_crop_bicubic(&ramp(32, 32), Window { top: 0, left: 0, height: 32, width: 32 }, 8, 8);
        let row = &out.data[..8];
        assert!(row.windows(2).all(|p| p[0] < p[1]), "{row:?}");
        // Antialiased downsampling of a linear ramp averages symmetric windows: the mean is kept.
        let mean: f32 = row.iter().sum::<f32>() / 8.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn pil_weights_for_two_to_one_downscale() {
        // Downscaling 4 → 2: scale 2, support 4, centre of output 0 is 1.0; inputs 0..3.
        let w = axis_weights(4, 2);
        assert_eq!(w[0].0, 0);
        let raw: Vec<f32> = (0..4).map(|x| bicubic_kernel((x as f32 - 1.0 + 0.5) / 2.0)).collect();
        let total: f32 = raw.iter().sum();
        for (a, b) in w[0].1.iter().zip(raw.iter().map(|r| r / total)) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn hsv_round_trip_and_hue_shift() {
        for &(r, g, b) in &[(0.2, 0.4, 0.6), (0.9, 0.1, 0.1), (0.5, 0.5, 0.5), (0.0, 1.0, 0.3)] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!((r - r2).abs() < 1e-6 && (g - g2).abs() < 1e-6 && (b - b2).abs() < 1e-6);
        }
        // Pure red shifted by a third of a turn becomes pure green.
        let mut img = Rgb { height: 1, width: 1, data: vec![1.0, 0.0, 0.0] };
        adjust_hue(&mut img, 1.0 / 3.0);
        assert!((img.data[0]).abs() < 1e-5 && (img.data[1] - 1.0).abs() < 1e-5, "{:?}", img.data);
    }

    #[test]
    fn grayscale_brightness_contrast_saturation() {
        let mut img = Rgb { height: 1, width: 2, data: vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0] };
        let mut g = img.clone();
        to_grayscale(&mut g);
        assert!((g.data[0] - 0.299).abs() < 1e-6 && (g.data[2] - 0.299).abs() < 1e-6);
        assert!((g.data[1] - 0.587).abs() < 1e-6 && (g.data[5] - 0.587).abs() < 1e-6);
        let mut s = img.clone();
        adjust_saturation(&mut s, 0.0);
        assert_eq!(s, g);
        let mut c = img.clone();
        adjust_contrast(&mut c, 0.0);
        let mean = (0.299 + 0.587) / 2.0;
        assert!(c.data.iter().all(|v| (v - mean).abs() < 1e-6));
        adjust_brightness(&mut img, 2.0);
        assert_eq!(img.data, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn crop_window_respects_scale_and_ratio() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..1000 {
            let w = random_resized_crop_window(&mut rng, 32, 32, (0.2, 1.0), (0.75, 4.0 / 3.0));
            assert!(w.top + w.height <= 32 && w.left + w.width <= 32);
            let frac = (w.height * w.width) as f32 / 1024.0;
            assert!(frac > 0.15, "{w:?}");
        }
    }

    #[test]
    fn validate_names_the_field() {
        let mut p = Augment::wmse_cifar([0.5; 3], [0.5; 3]);
        assert!(p.validate().is_ok());
        p.view_a.crop_scale = (0.8, 0.2);
        assert!(p.validate().unwrap_err().to_string().contains("view_a.crop_scale"));
        p = Augment::preset(Preset::Fair, 32, [0.5; 3], [0.5; 3]);
        p.view_b.color_jitter.hue = 0.7;
        assert!(p.validate().unwrap_err().to_string().contains("view_b.color_jitter.hue"));
        p = Augment::preset(Preset::Fair, 32, [0.5; 3], [0.5; 3]);
        p.view_b.size = 16;
        assert!(p.validate().unwrap_err().to_string().contains("view_b.size 16 differ"));
    }

    #[test]
    fn blur_keeps_constants_and_mass_and_spreads_a_point_like_a_gaussian() {
        let mut flat = Rgb { height: 9, width: 9, data: vec![0.3; 243] };
        gaussian_blur(&mut flat, 1.5);
        assert!(flat.data.iter().all(|v| (v - 0.3).abs() < 1e-6));
        let mut point = Rgb { height: 21, width: 21, data: vec![0.0; 3 * 441] };
        point.data[10 * 21 + 10] = 1.0;
        gaussian_blur(&mut point, 1.0);
        let total: f32 = point.data[..441].iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "mass kept away from the borders: {total}");
        // Separable Gaussian: neighbour ratios are exp(−1/2σ²) along an axis and its square diagonally.
        let c = point.data[10 * 21 + 10];
        let ratio = point.data[10 * 21 + 11] / c;
        let diag = point.data[11 * 21 + 11] / c;
        assert!((ratio - (-0.5f32).exp()).abs() < 1e-4, "{ratio}");
        assert!((diag - (-1.0f32).exp()).abs() < 1e-4, "{diag}");
    }

    /// The blur's definition, one output value at a time: the taps of the reflect-padded row
    /// (then column) summed in kernel order.
    fn blur_by_definition(img: &Rgb, sigma: f32) -> Rgb {
        let radius = ((3.0 * sigma).ceil() as isize).max(1).min(img.height.min(img.width) as isize - 1);
        let raw: Vec<f32> =
            (0..=2 * radius).map(|i| (-((i - radius) as f32).powi(2) / (2.0 * sigma * sigma)).exp()).collect();
        let total: f32 = raw.iter().sum();
        let kernel: Vec<f32> = raw.into_iter().map(|v| v / total).collect();
        let reflect = |i: isize, n: usize| {
            let i = i.abs();
            (if i >= n as isize { 2 * (n as isize - 1) - i } else { i }) as usize
        };
        let (h, w) = (img.height, img.width);
        let mut out = img.clone();
        for (plane, dst) in img.data.chunks(h * w).zip(out.data.chunks_mut(h * w)) {
            let mut tmp = vec![0.0f32; h * w];
            for y in 0..h {
                for x in 0..w {
                    let mut acc = 0.0f32;
                    for (k, kv) in kernel.iter().enumerate() {
                        acc += kv * plane[y * w + reflect(x as isize + k as isize - radius, w)];
                    }
                    tmp[y * w + x] = acc;
                }
            }
            for y in 0..h {
                for x in 0..w {
                    let mut acc = 0.0f32;
                    for (k, kv) in kernel.iter().enumerate() {
                        acc += kv * tmp[reflect(y as isize + k as isize - radius, h) * w + x];
                    }
                    dst[y * w + x] = acc;
                }
            }
        }
        out
    }

    #[test]
    fn blur_rows_at_a_time_equal_the_definition_bit_for_bit() {
        let bits = |img: &Rgb| img.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (h, w, sigma) in [(30, 41, 2.0), (7, 5, 1.3), (224, 224, 0.1), (3, 64, 1.9), (2, 9, 1.0)] {
            let img =
                Rgb { height: h, width: w, data: (0..3 * h * w).map(|i| ((i * 37 % 101) as f32) / 100.0).collect() };
            let mut fast = img.clone();
            gaussian_blur(&mut fast, sigma);
            assert_eq!(bits(&fast), bits(&blur_by_definition(&img, sigma)), "{h}×{w}, σ {sigma}");
        }
    }

    #[test]
    fn solarize_inverts_from_128_up() {
        let mut img = Rgb { height: 1, width: 1, data: vec![127.0 / 255.0, 128.0 / 255.0, 1.0] };
        solarize(&mut img);
        let expected = [127.0 / 255.0, 127.0 / 255.0, 0.0];
        assert!(img.data.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", img.data);
    }

    #[test]
    fn stl10_evaluation_resizes_to_70_and_crops_the_centre_64() {
        let mut a = Augment::preset(Preset::Wmse, 64, [0.0; 3], [1.0; 3]);
        a.eval_resize = 70;
        a.eval_crop = 64;
        let img = ramp(96, 96);
        let out = a.eval(&img);
        assert_eq!((out.height, out.width, out.data.len()), (64, 64, 3 * 64 * 64));
        assert_eq!(a.eval_size(96), 64);
        // Column j of the crop is column j + 3 of the 70-wide resize.
        let full = resized_crop_bicubic(&img, Window { top: 0, left: 0, height: 96, width: 96 }, 70, 70);
        assert!((out.data[5 * 64 + 7] - full.data[8 * 70 + 10]).abs() < 1e-6);
    }

    #[test]
    fn presets_differ_where_the_papers_do() {
        let fair = Augment::preset(Preset::Fair, 32, [0.5; 3], [0.5; 3]);
        assert_eq!((fair.view_a.blur_p, fair.view_a.solarize_p), (1.0, 0.0));
        assert_eq!((fair.view_b.blur_p, fair.view_b.solarize_p), (0.1, 0.2));
        assert_eq!(fair.pipeline(3), &fair.view_b);
        let wmse = Augment::wmse_cifar([0.5; 3], [0.5; 3]);
        assert_eq!(wmse.view_a, wmse.view_b);
        // Every view of both presets has the crop size and stays in range before normalising.
        let img = ramp(40, 40);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for a in [&fair, &wmse] {
            for v in 0..4 {
                let x = a.pipeline(v).apply(&img, &mut rng);
                assert_eq!((x.height, x.width), (32, 32));
                assert!(x.data.iter().all(|v| (0.0..=1.0).contains(v)));
            }
        }
    }
}
