//! Every table people read (`--output table`, the admin API's `format=table`): tags, plans,
//! explanations and the audit log. The domain modules build views; this module lays them out,
//! so column widths, sizes, short digests and times read the same in every table.
//!
//! Owns: text layout. May call: `index` (model types), `inspect` (tag views), `planning`
//! (explanations, times), `policy` (plans), `cleanup` (history entries).

mod history;
mod plan;
mod tags;

use std::fmt::Write as _;

pub use history::history_table;
pub use plan::{explain_table, plan_table};
pub use tags::tags_table;

/// `512 B`, `1.5 KiB`, … in binary units.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Rows as aligned columns, two spaces apart; the last column is not padded.
pub fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                let _ = write!(out, "{cell}");
            } else {
                let _ = write!(out, "{cell:<width$}  ");
            }
        }
        out.push('\n');
    }
    out
}
