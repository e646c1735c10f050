//! `its detect --annotate DIR`: a copy of each image with its detections drawn on it (a box
//! per detection in a colour per class, a label with the class name and score), as JPEG.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use its_engine::{Detection, RgbImage};

/// Box colours, indexed by class id modulo the length.
const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 190],
];

/// 5x7 glyphs, one row per byte (bit 4 = leftmost column).
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_lowercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        ' ' => [0; 7],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'g' => [0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'j' => [0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'q' => [0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A],
        'x' => [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'z' => [0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F],
        // Anything else: a hollow box, so a missing glyph is visible rather than silent.
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

struct Canvas<'a> {
    img: &'a mut RgbImage,
}

impl Canvas<'_> {
    /// Fills `[x1, x2) x [y1, y2)`, clipped to the image.
    fn fill(&mut self, x1: i64, y1: i64, x2: i64, y2: i64, rgb: [u8; 3]) {
        let (w, h) = (i64::from(self.img.width), i64::from(self.img.height));
        let (x1, x2) = (x1.clamp(0, w), x2.clamp(0, w));
        let (y1, y2) = (y1.clamp(0, h), y2.clamp(0, h));
        for y in y1..y2 {
            let row = (y * w) as usize * 3;
            for x in x1..x2 {
                let i = row + x as usize * 3;
                self.img.data[i..i + 3].copy_from_slice(&rgb);
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, scale: i64, s: &str, rgb: [u8; 3]) {
        for (k, c) in s.chars().enumerate() {
            let gx = x + k as i64 * 6 * scale;
            for (r, bits) in glyph(c).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let (px, py) = (gx + col * scale, y + r as i64 * scale);
                        self.fill(px, py, px + scale, py + scale, rgb);
                    }
                }
            }
        }
    }
}

/// Draws `dets` (original-frame pixels) on a copy of `img`.
pub fn draw(img: &RgbImage, dets: &[Detection], classes: &[String]) -> RgbImage {
    let mut out = img.clone();
    let mut c = Canvas { img: &mut out };
    let short = img.width.min(img.height) as i64;
    let line = (short / 300).max(2);
    let scale = (short / 400).max(1);
    // Lowest score first, so the best boxes end up on top.
    let mut order: Vec<&Detection> = dets.iter().collect();
    order.sort_by(|a, b| a.score.total_cmp(&b.score));
    for d in order {
        let rgb = PALETTE[d.class_id as usize % PALETTE.len()];
        let (x1, y1) = (d.x1.round() as i64, d.y1.round() as i64);
        let (x2, y2) = (d.x2.round() as i64, d.y2.round() as i64);
        c.fill(x1, y1, x2, y1 + line, rgb);
        c.fill(x1, y2 - line, x2, y2, rgb);
        c.fill(x1, y1, x1 + line, y2, rgb);
        c.fill(x2 - line, y1, x2, y2, rgb);
        let name = classes
            .get(d.class_id as usize)
            .map(String::as_str)
            .unwrap_or("?");
        let label = format!("{name} {:.2}", d.score);
        let (tw, th) = (label.chars().count() as i64 * 6 * scale + scale, 9 * scale);
        // Above the box when there is room, else inside it.
        let ty = if y1 - th >= 0 { y1 - th } else { y1 };
        c.fill(x1, ty, x1 + tw, ty + th, rgb);
        let ink = if u32::from(rgb[0]) + u32::from(rgb[1]) + u32::from(rgb[2]) > 450 {
            [0, 0, 0]
        } else {
            [255, 255, 255]
        };
        c.text(x1 + scale, ty + scale, scale, &label, ink);
    }
    out
}

/// Where the annotated copy of `image` goes: `<dir>/<file stem>.jpg`.
pub fn output_path(dir: &Path, image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    dir.join(format!("{stem}.jpg"))
}

/// Draws and writes the annotated copy of `image` into `dir` (created); returns its path.
pub fn write(
    dir: &Path,
    image: &Path,
    img: &RgbImage,
    dets: &[Detection],
    classes: &[String],
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let out = draw(img, dets, classes);
    let path = output_path(dir, image);
    let (w, h) = (
        u16::try_from(out.width).context("image too wide for JPEG")?,
        u16::try_from(out.height).context("image too tall for JPEG")?,
    );
    jpeg_encoder::Encoder::new_file(&path, 90)
        .and_then(|e| e.encode(&out.data, w, h, jpeg_encoder::ColorType::Rgb))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
