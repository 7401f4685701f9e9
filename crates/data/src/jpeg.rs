//! JPEG decoding on libjpeg-turbo (its TurboJPEG 3 API; `turbojpeg-sys` builds the library from
//! the source it vendors and links it statically): a whole image, or a window of one, at full
//! size or scaled by 1/2, 1/4 or 1/8 in the DCT domain.
//!
//! A window costs less than the whole image: only the rows it covers go through the inverse DCT
//! and colour conversion (the others' entropy-coded data is still read), and only its columns,
//! from the iMCU column that holds its left edge. Scaling drops DCT coefficients, so a 1/4 decode
//! does about a sixteenth of the inverse DCT's work. `bench/README.md` has the timings.
//!
//! Images libjpeg-turbo can't decode into 8-bit RGB here (12-bit or lossless JPEGs, CMYK) report
//! [`Jpeg::Other`], and their callers decode them with the `image` crate instead.

use turbojpeg_sys as tj;

use crate::augment::Window;

/// What the header says of a JPEG that libjpeg-turbo decodes here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: usize,
    pub height: usize,
    /// Columns of one iMCU at full size, the unit a window's left edge is aligned to (`None`
    /// for a subsampling TurboJPEG doesn't name, whose windows start at the left edge).
    imcu_width: Option<usize>,
}

/// A file's bytes, as far as this module is concerned.
pub enum Jpeg {
    /// A JPEG this module decodes.
    Decodable(Header),
    /// Not a JPEG (no start-of-image marker), or one it leaves to the `image` crate.
    Other,
}

/// The pixels a decode produced: interleaved RGB bytes of `window`, a window of the image at the
/// decode's scale (its left edge possibly left of the one asked for: aligned to an iMCU).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub window: Window,
    pub rgb: Vec<u8>,
}

/// The scales a decode takes: 1/1, 1/2, 1/4 and 1/8, the ones libjpeg-turbo has SIMD inverse
/// DCTs for (its other eighths are plain C and were slower than a whole decode here).
pub const SCALES: [usize; 4] = [1, 2, 4, 8];

/// A decompressor for one file. A fresh one each time: one reused across files keeps the last
/// file's header fields when the next file's header reads as tables only (a stub of a JPEG).
struct Handle(tj::tjhandle);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from `tj3Init` and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// `f` with a new decompressor.
fn with_handle<T>(f: impl FnOnce(tj::tjhandle) -> Result<T, String>) -> Result<T, String> {
    // SAFETY: no preconditions; a null handle is an error.
    let h = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as i32) };
    if h.is_null() {
        return Err("libjpeg-turbo could not create a decompressor".into());
    }
    let handle = Handle(h);
    f(handle.0)
}

/// The decompressor's last error, as libjpeg-turbo words it.
fn last_error(h: tj::tjhandle) -> String {
    // SAFETY: `h` is a live handle; the string is libjpeg-turbo's, copied before the next call.
    unsafe { std::ffi::CStr::from_ptr(tj::tj3GetErrorStr(h)) }.to_string_lossy().into_owned()
}

/// How an error says that a file is not a JPEG this module can read.
const UNREADABLE: &str = "not a readable image (JPEG)";

/// Columns of one iMCU for each chrominance subsampling (`TJSAMP_444` … `TJSAMP_441`), the
/// table TurboJPEG's header keeps as `tjMCUWidth`.
const IMCU_WIDTH: [usize; 7] = [8, 16, 16, 8, 8, 32, 8];

/// Reads `bytes`' header into `h`.
fn read_header(h: tj::tjhandle, bytes: &[u8]) -> Result<Jpeg, String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Ok(Jpeg::Other);
    }
    // SAFETY: `h` is a live handle; the pointer and length describe `bytes`.
    if unsafe { tj::tj3DecompressHeader(h, bytes.as_ptr(), bytes.len() as _) } != 0 {
        return Err(format!("{UNREADABLE}: {}", last_error(h)));
    }
    // SAFETY: `h` is a live handle whose header was just read.
    let get = |param: tj::TJPARAM| unsafe { tj::tj3Get(h, param as i32) };
    let (width, height) = (get(tj::TJPARAM_TJPARAM_JPEGWIDTH), get(tj::TJPARAM_TJPARAM_JPEGHEIGHT));
    let (Ok(width @ 1..), Ok(height @ 1..)) = (usize::try_from(width), usize::try_from(height)) else {
        return Err(format!("{UNREADABLE}: its header gives no image size"));
    };
    let colour = get(tj::TJPARAM_TJPARAM_COLORSPACE);
    let eight_bit = get(tj::TJPARAM_TJPARAM_PRECISION) == 8 && get(tj::TJPARAM_TJPARAM_LOSSLESS) != 1;
    if !eight_bit || colour == tj::TJCS_TJCS_CMYK as i32 || colour == tj::TJCS_TJCS_YCCK as i32 {
        return Ok(Jpeg::Other);
    }
    let imcu_width = usize::try_from(get(tj::TJPARAM_TJPARAM_SUBSAMP)).ok().and_then(|s| IMCU_WIDTH.get(s).copied());
    Ok(Jpeg::Decodable(Header { width, height, imcu_width }))
}

/// What `bytes` is: a JPEG this module decodes (with its size), or something else. A file that
/// starts like a JPEG but whose header doesn't read is an error, in libjpeg-turbo's words.
pub fn header(bytes: &[u8]) -> Result<Jpeg, String> {
    with_handle(|h| read_header(h, bytes))
}

/// Pixels decoded on each side of a window beyond it (see [`decode`]).
const MARGIN: usize = 2;

/// `n` columns or rows scaled by `1 / scale`, rounded up as libjpeg-turbo sizes its output.
pub fn scaled(n: usize, scale: usize) -> usize {
    n.div_ceil(scale)
}

/// `window` (in full-size pixels; the whole image if `None`) of the JPEG in `bytes`, decoded at
/// `1 / scale` (one of [`SCALES`]). The result covers the scaled window (from the floor of its
/// top and left edges to the ceiling of its bottom and right ones) and a margin of a few pixels
/// around it where the image has them, its left edge aligned down to an iMCU; inside the scaled
/// window its pixels are those of the whole image's decode at that scale. Truncated or corrupt
/// data is an error: a warning from libjpeg-turbo (a premature end of the data, say) fails the
/// decode rather than fill the rest with grey.
pub fn decode(bytes: &[u8], window: Option<Window>, scale: usize) -> Result<Decoded, String> {
    assert!(SCALES.contains(&scale), "jpeg::decode: scale 1/{scale}");
    with_handle(|h| {
        let Jpeg::Decodable(head) = read_header(h, bytes)? else {
            return Err("not a JPEG libjpeg-turbo decodes into 8-bit RGB".into());
        };
        let (width, height) = (scaled(head.width, scale), scaled(head.height, scale));
        let all = Window { top: 0, left: 0, height: head.height, width: head.width };
        let asked = window.unwrap_or(all);
        if asked.height == 0
            || asked.width == 0
            || asked.top + asked.height > head.height
            || asked.left + asked.width > head.width
        {
            return Err(format!("window {asked:?} is not inside the {} × {} image", head.width, head.height));
        }
        // The scaled window, widened by a margin: chrominance upsampling blends each pixel with
        // its neighbours, and at a decoded region's edge libjpeg-turbo repeats the edge instead,
        // so the margin keeps the window's own pixels those of the whole decode.
        let imcu = head.imcu_width.map(|m| scaled(m, scale));
        let left = imcu.map_or(0, |m| (asked.left / scale).saturating_sub(MARGIN) / m * m);
        let top = (asked.top / scale).saturating_sub(MARGIN);
        let right = (scaled(asked.left + asked.width, scale) + MARGIN).min(width);
        let bottom = (scaled(asked.top + asked.height, scale) + MARGIN).min(height);
        let out = Window { top, left, height: bottom - top, width: right - left };
        // SAFETY (this block): `h` is a live handle whose header was just read; the region lies
        // inside the scaled image (checked above), and the output buffer holds its
        // `height × width × 3` bytes at a pitch of `width × 3`.
        unsafe {
            let factor = tj::tjscalingfactor { num: 1, denom: scale as i32 };
            if tj::tj3SetScalingFactor(h, factor) != 0 {
                return Err(format!("scaling by 1/{scale}: {}", last_error(h)));
            }
            let region = if out == (Window { top: 0, left: 0, height, width }) {
                tj::tjregion { x: 0, y: 0, w: 0, h: 0 }
            } else {
                tj::tjregion { x: left as i32, y: top as i32, w: out.width as i32, h: out.height as i32 }
            };
            if tj::tj3SetCroppingRegion(h, region) != 0 {
                return Err(format!("window {out:?} at 1/{scale}: {}", last_error(h)));
            }
            let mut rgb = vec![0u8; out.height * out.width * 3];
            let pitch = (out.width * 3) as i32;
            let status =
                tj::tj3Decompress8(h, bytes.as_ptr(), bytes.len() as _, rgb.as_mut_ptr(), pitch, tj::TJPF_TJPF_RGB);
            if status != 0 {
                return Err(format!("{UNREADABLE}: {}", last_error(h)));
            }
            Ok(Decoded { window: out, rgb })
        }
    })
}

/// The largest of [`SCALES`] at which every one of `windows` (full-size pixels) keeps at least
/// `min_side` pixels each way: how far a decode for views of side `min_side` can shrink their
/// windows before the views' own resize, so that no view is upsampled from fewer pixels than
/// the whole decode would have given it.
pub fn scale_for(windows: &[Window], min_side: usize) -> usize {
    SCALES
        .into_iter()
        .rev()
        .find(|&s| windows.iter().all(|w| w.height / s >= min_side && w.width / s >= min_side))
        .unwrap_or(1)
}

/// `window` (full-size pixels) as it lies in the pixels of `decoded`, a decode at `1 / scale`
/// that covers it: each edge scaled and rounded to the nearest pixel (at 1/1, exactly the
/// window), at least one pixel each way.
pub fn within(window: Window, scale: usize, decoded: Window) -> Window {
    let edge = |at: usize| (at as f64 / scale as f64).round() as usize;
    let (top, left) = (edge(window.top).max(decoded.top), edge(window.left).max(decoded.left));
    let bottom = edge(window.top + window.height).clamp(top + 1, decoded.top + decoded.height);
    let right = edge(window.left + window.width).clamp(left + 1, decoded.left + decoded.width);
    Window { top: top - decoded.top, left: left - decoded.left, height: bottom - top, width: right - left }
}

/// The smallest window holding all of `windows` (none: an empty one).
pub fn union(windows: &[Window]) -> Window {
    let top = windows.iter().map(|w| w.top).min().unwrap_or(0);
    let left = windows.iter().map(|w| w.left).min().unwrap_or(0);
    let bottom = windows.iter().map(|w| w.top + w.height).max().unwrap_or(0);
    let right = windows.iter().map(|w| w.left + w.width).max().unwrap_or(0);
    Window { top, left, height: bottom - top, width: right - left }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A photo-like JPEG (smooth gradients, a ring and hard edges) of `width × height` at quality
    /// 90, its chrominance subsampled as `subsampling` (a `TJSAMP_*`), encoded by libjpeg-turbo.
    pub(crate) fn sample_jpeg(width: usize, height: usize, subsampling: tj::TJSAMP) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
                let ring = (((fx - 0.4).powi(2) + (fy - 0.6).powi(2)).sqrt() * 40.0).sin();
                let stripe = if (x / 13 + y / 7) % 2 == 0 { 30 } else { 220 };
                rgb.extend([(255.0 * fx) as u8, (127.0 + 120.0 * ring) as u8, stripe]);
            }
        }
        // SAFETY: a fresh compressor, `rgb` holds `height` rows of `width × 3` bytes, and the
        // output buffer is TurboJPEG's own, freed after copying.
        unsafe {
            let h = tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as i32);
            assert!(!h.is_null());
            assert_eq!(tj::tj3Set(h, tj::TJPARAM_TJPARAM_QUALITY as i32, 90), 0);
            assert_eq!(tj::tj3Set(h, tj::TJPARAM_TJPARAM_SUBSAMP as i32, subsampling), 0);
            let (mut out, mut len) = (std::ptr::null_mut(), 0);
            let status = tj::tj3Compress8(
                h,
                rgb.as_ptr(),
                width as i32,
                (width * 3) as i32,
                height as i32,
                tj::TJPF_TJPF_RGB,
                &mut out,
                &mut len,
            );
            assert_eq!(status, 0, "{}", last_error(h));
            let bytes = std::slice::from_raw_parts(out, len as usize).to_vec();
            tj::tj3Free(out.cast());
            tj::tj3Destroy(h);
            bytes
        }
    }

    /// A window of the decode equals the same pixels of the whole decode, at every scale and
    /// for 4:2:0, 4:2:2 and 4:4:4 chrominance, for windows at odd places (the left edge aligned
    /// down to an iMCU, the others rounded out).
    #[test]
    fn a_window_is_the_same_pixels_as_the_whole_image() {
        let samplings = [(tj::TJSAMP_TJSAMP_420, 16), (tj::TJSAMP_TJSAMP_422, 16), (tj::TJSAMP_TJSAMP_444, 8)];
        for (sampling, imcu_width) in samplings {
            let bytes = sample_jpeg(203, 150, sampling);
            let Jpeg::Decodable(head) = header(&bytes).unwrap() else { panic!("a JPEG") };
            assert_eq!((head.width, head.height, head.imcu_width), (203, 150, Some(imcu_width)));
            for scale in SCALES {
                let whole = decode(&bytes, None, scale).unwrap();
                assert_eq!((whole.window.width, whole.window.height), (scaled(203, scale), scaled(150, scale)));
                for window in [
                    Window { top: 0, left: 0, height: 150, width: 203 },
                    Window { top: 37, left: 21, height: 64, width: 90 },
                    Window { top: 101, left: 150, height: 49, width: 53 },
                    Window { top: 3, left: 17, height: 8, width: 8 },
                ] {
                    let case = format!("sampling {sampling}, {window:?} at 1/{scale}");
                    let part = decode(&bytes, Some(window), scale).unwrap();
                    let w = part.window;
                    let (top, left) = (window.top / scale, window.left / scale);
                    let bottom = scaled(window.top + window.height, scale);
                    let right = scaled(window.left + window.width, scale);
                    assert!(w.left <= left && w.top <= top, "{case}: {w:?}");
                    assert!(w.left + w.width >= right && w.top + w.height >= bottom, "{case}: {w:?}");
                    assert_eq!(w.left % scaled(imcu_width, scale), 0, "{case}: the left edge on an iMCU");
                    let at = |rgb: &[u8], stride: usize, y: usize, x: usize| rgb[(y * stride + x) * 3..][..3].to_vec();
                    for (y, x) in (top..bottom).flat_map(|y| (left..right).map(move |x| (y, x))) {
                        let (got, full) =
                            (at(&part.rgb, w.width, y - w.top, x - w.left), at(&whole.rgb, whole.window.width, y, x));
                        assert_eq!(got, full, "{case}: pixel ({y}, {x}) of the scaled image");
                    }
                }
            }
        }
    }

    /// The scale shrinks a window no further than the views' side.
    #[test]
    fn the_scale_keeps_every_window_at_least_the_views_side() {
        let w = |height, width| Window { top: 0, left: 0, height, width };
        assert_eq!(scale_for(&[w(1800, 2000), w(900, 1000)], 224), 4);
        assert_eq!(scale_for(&[w(1800, 2000), w(447, 1000)], 224), 1);
        assert_eq!(scale_for(&[w(448, 448)], 224), 2);
        assert_eq!(scale_for(&[w(3000, 4000)], 224), 8);
        assert_eq!(scale_for(&[w(100, 100)], 224), 1);
    }

    /// Truncated data, a broken header and a non-JPEG each say what they are.
    #[test]
    fn bad_data_is_an_error_or_left_to_the_image_crate() {
        let bytes = sample_jpeg(64, 48, tj::TJSAMP_TJSAMP_420);
        let cut = &bytes[..bytes.len() * 2 / 3];
        let err = decode(cut, None, 1).unwrap_err();
        assert!(err.starts_with(UNREADABLE), "{err}");
        assert!(header(&[0xFF, 0xD8, 0xFF, 0x00, 1, 2]).is_err());
        assert!(matches!(header(b"\x89PNG\r\n").unwrap(), Jpeg::Other));
        let err = decode(&bytes, Some(Window { top: 40, left: 0, height: 9, width: 8 }), 1).unwrap_err();
        assert!(err.contains("not inside"), "{err}");
    }
}
