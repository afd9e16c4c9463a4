//! PNG line charts through plotters' bitmap backend into an RGB buffer, written with the `png`
//! encoder; text is drawn with ab_glyph from a TrueType font registered once
//! ([`register_font`]).

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Registers the TrueType font at `path` as plotters' "sans-serif".
pub fn register_font(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("read font {}", path.display()))?;
    // plotters keeps the font for the process's life.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a TrueType font", path.display()))
}

/// `y` against `x` (logarithmic, as scales grow by factors), one line with points per series.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x));
    let (mut x_min, mut x_max) =
        xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if !(x_min > 0.0 && x_max.is_finite()) {
        return Err(anyhow!("{title}: scales must be positive"));
    }
    // Some room either side, and a range for a single scale.
    x_min /= 1.5;
    x_max *= 1.5;
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0_f64, f64::max)
        .max(1e-3)
        * 1.15;
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(
        &mut rgb,
        title,
        x_label,
        y_label,
        series,
        (x_min, x_max, y_max),
    )?;
    write_png(path, &rgb).with_context(|| format!("write {}", path.display()))
}

const WIDTH: u32 = 960;
const HEIGHT: u32 = 560;

/// The chart drawn into `rgb` (WIDTH x HEIGHT, 3 bytes a pixel).
fn draw(
    rgb: &mut [u8],
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    (x_min, x_max, y_max): (f64, f64, f64),
) -> anyhow::Result<()> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(14)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| crate::report::number(*x))
        .y_label_formatter(&|y| crate::report::number(*y))
        .draw()?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `rgb` as an 8-bit RGB PNG at `path`.
fn write_png(path: &Path, rgb: &[u8]) -> anyhow::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}
