//! PNG output: plotters' bitmap backend, with text drawn from a TrueType or OpenType font
//! read at run time (`STEREOSCOPE_FONT`, else the usual system folders). Glyphs keep their
//! side bearings and kerning, and text is anchored and rotated as the SVG backend does it,
//! so a figure lays out alike in both formats.

use ab_glyph::{Font, FontArc, PxScale, ScaleFont, point};
use plotters::prelude::{BitMapBackend, DrawingBackend};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind, FontStyle,
    FontTransform,
};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The faces text is drawn with; titles use the bold one when there is one.
pub struct Fonts {
    regular: FontArc,
    bold: Option<FontArc>,
}

const FONT_FILES: [&str; 10] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Helvetica.ttc",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];
const FONT_NAMES: [&str; 3] = ["DejaVuSans.ttf", "LiberationSans-Regular.ttf", "Arial.ttf"];
const FONT_DIRS: [&str; 4] = [
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
];

/// The font file: `STEREOSCOPE_FONT`, else a known system font.
fn find_font() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("STEREOSCOPE_FONT") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("STEREOSCOPE_FONT={} is not a file", p.display()))
        };
    }
    if let Some(p) = FONT_FILES.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Ok(p);
    }
    let mut stack: Vec<(PathBuf, u32)> = FONT_DIRS.iter().map(|d| (d.into(), 0)).collect();
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        stack.extend([
            (home.join(".local/share/fonts"), 0),
            (home.join(".fonts"), 0),
        ]);
    }
    // A bounded walk: font folders are a few levels deep.
    while let Some((dir, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() && depth < 4 {
                stack.push((p, depth + 1));
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| FONT_NAMES.contains(&n))
            {
                return Ok(p);
            }
        }
    }
    Err("none found in the usual system folders".into())
}

fn read_font(p: &Path) -> Result<FontArc, String> {
    let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    FontArc::try_from_vec(bytes)
        .map_err(|_| format!("{} is not a TrueType or OpenType font", p.display()))
}

/// The fonts, loaded once per process; the error says what was looked for.
pub fn fonts() -> Result<&'static Fonts, String> {
    static FONTS: OnceLock<Result<Fonts, String>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let path = find_font()?;
            let regular = read_font(&path)?;
            let name = path.to_string_lossy();
            let bold = if name.contains("-Regular.") {
                name.replacen("-Regular.", "-Bold.", 1)
            } else {
                name.replacen(".ttf", "-Bold.ttf", 1)
            };
            let bold = (bold != name)
                .then(|| read_font(Path::new(&bold)).ok())
                .flatten();
            Ok(Fonts { regular, bold })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A bitmap backend whose text is drawn with `Fonts`.
pub struct Png<'a> {
    pub inner: BitMapBackend<'a>,
    pub fonts: &'static Fonts,
}

type BackendResult<'a> =
    Result<(), DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>;

impl Png<'_> {
    /// The face, its scale and the em size of a text style (plotters' size is 1.24 em, as
    /// the SVG backend writes it).
    fn face<S: BackendTextStyle>(&self, style: &S) -> (&FontArc, PxScale, f32) {
        let font = match (style.style(), &self.fonts.bold) {
            (FontStyle::Bold, Some(b)) => b,
            _ => &self.fonts.regular,
        };
        let em = (style.size() / 1.24) as f32;
        let per_em = font.units_per_em().unwrap_or(1000.0);
        (
            font,
            PxScale::from(em * font.height_unscaled() / per_em),
            em,
        )
    }

    fn width<S: BackendTextStyle>(&self, text: &str, style: &S) -> f32 {
        let (font, scale, _) = self.face(style);
        let f = font.as_scaled(scale);
        let mut prev = None;
        let mut w = 0.0;
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                w += f.kern(p, id);
            }
            w += f.h_advance(id);
            prev = Some(id);
        }
        w
    }
}

impl<'a> DrawingBackend for Png<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> BackendResult<'a> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> BackendResult<'a> {
        self.inner.present()
    }
    fn draw_pixel(&mut self, p: BackendCoord, c: BackendColor) -> BackendResult<'a> {
        self.inner.draw_pixel(p, c)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> BackendResult<'a> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        style: &S,
        fill: bool,
    ) -> BackendResult<'a> {
        self.inner.draw_rect(a, b, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> BackendResult<'a> {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> BackendResult<'a> {
        self.inner.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> BackendResult<'a> {
        self.inner.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> BackendResult<'a> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (_, _, em) = self.face(style);
        Ok((
            self.width(text, style).ceil() as u32,
            (1.2 * em).ceil() as u32,
        ))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        (x0, y0): BackendCoord,
    ) -> BackendResult<'a> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let width = self.width(text, style);
        let (font, scale, em) = self.face(style);
        let f = font.as_scaled(scale);
        // Where the text starts and where its baseline lies, relative to the anchor, as
        // the SVG backend's text-anchor and dy (0.76em, 0.5ex, -0.5ex) place them.
        let start = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let baseline = match style.anchor().v_pos {
            VPos::Top => 0.76 * em,
            VPos::Center => 0.27 * em,
            VPos::Bottom => -0.27 * em,
        };
        let transform = style.transform();
        let mut pixels = Vec::new();
        let mut caret = start;
        let mut prev = None;
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                caret += f.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(scale, point(caret, baseline));
            caret += f.h_advance(id);
            if let Some(outline) = font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                outline.draw(|gx, gy, cover| {
                    pixels.push((
                        b.min.x as i32 + gx as i32,
                        b.min.y as i32 + gy as i32,
                        cover,
                    ));
                });
            }
        }
        for (u, v, cover) in pixels {
            let (dx, dy) = match transform {
                FontTransform::Rotate90 => (-v, u),
                FontTransform::Rotate180 => (-u, -v),
                FontTransform::Rotate270 => (v, -u),
                _ => (u, v),
            };
            let c = BackendColor {
                alpha: color.alpha * f64::from(cover.min(1.0)),
                rgb: color.rgb,
            };
            self.inner.draw_pixel((x0 + dx, y0 + dy), c)?;
        }
        Ok(())
    }
}
