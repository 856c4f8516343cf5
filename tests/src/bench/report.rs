//! Statistics and the markdown the README carries.
//!
//! The layout is fixed (columns, row order, number formats) so one run's
//! table can replace the previous one in the README without hand editing.

use std::fmt;

/// Median of `values`; the mean of the two middle ones for an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    })
}

/// The `q` quantile (0 to 1) of `values` by the nearest-rank method: a value
/// that was measured, never an interpolation.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    Some(values.iter().sum::<f64>() / values.len() as f64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A markdown table.
#[derive(Debug, Default)]
pub struct Table {
    head: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[(&str, Align)]) -> Self {
        Self {
            head: head.iter().map(|(h, a)| ((*h).to_owned(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are left empty, extra ones are dropped, so
    /// the table stays rectangular whatever the caller passes.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.head.len(), String::new());
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, cells: &mut dyn Iterator<Item = &str>| {
            f.write_str("|")?;
            for c in cells {
                write!(f, " {} |", c.replace('|', "\\|"))?;
            }
            f.write_str("\n")
        };
        line(f, &mut self.head.iter().map(|(h, _)| h.as_str()))?;
        f.write_str("|")?;
        for (_, a) in &self.head {
            f.write_str(match a {
                Align::Left => "---|",
                Align::Right => "---:|",
            })?;
        }
        f.write_str("\n")?;
        for r in &self.rows {
            line(f, &mut r.iter().map(String::as_str))?;
        }
        Ok(())
    }
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// A packet rate: `412.3k`, `1.25M`.
pub fn rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2}M", pps / 1e6)
    } else {
        format!("{:.1}k", pps / 1e3)
    }
}

/// Nanoseconds, rounded to whole ones (the kernel reports whole ones).
pub fn ns(v: f64) -> String {
    format!("{v:.0}")
}

pub fn ratio(v: f64) -> String {
    format!("{v:.2}")
}

/// A session count as a column label: `1k`, `1M`, `262144`.
pub fn count(n: u32) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

/// `Some(v)` rendered with `f`, or an em dash.
pub fn or_dash(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or_else(|| "—".to_owned(), f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(mean(&[1.0, 2.0]), Some(1.5));
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&ten, 0.9), Some(9.0));
        assert_eq!(quantile(&ten, 1.0), Some(10.0));
        assert_eq!(quantile(&ten, 0.0), Some(1.0));
        assert_eq!(quantile(&[5.0], 0.9), Some(5.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn table_is_rectangular_markdown() {
        let mut t = Table::new(&[("a", Align::Left), ("b", Align::Right)]);
        t.row(vec!["x|y".into()]);
        t.row(vec!["1".into(), "2".into(), "dropped".into()]);
        assert_eq!(
            t.to_string(),
            "| a | b |\n|---|---:|\n| x\\|y |  |\n| 1 | 2 |\n"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(rate(412_345.0), "412.3k");
        assert_eq!(rate(1_250_000.0), "1.25M");
        assert_eq!(count(1000), "1k");
        assert_eq!(count(1_000_000), "1M");
        assert_eq!(count(262_144), "262144");
        assert_eq!(or_dash(None, ns), "—");
        assert_eq!(or_dash(Some(99.6), ns), "100");
        assert_eq!(verdict(true), "PASS");
    }
}
