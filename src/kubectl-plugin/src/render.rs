//! Output like kubectl's: aligned tables by default, or the report as `-o json` / `-o yaml`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::Format;
use crate::check::CheckReport;
use crate::explain::PodExplanation;
use crate::free::FreeReport;

/// Prints `report` as JSON, YAML or the table `table` renders.
pub fn print<T: Serialize>(
    format: Format,
    report: &T,
    table: fn(&T) -> String,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => table(report),
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Yaml => serde_yaml::to_string(report)?,
    };
    print!("{text}");
    Ok(())
}

/// Rows as columns padded to their widest cell, separated by three spaces (like kubectl).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.len()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|cell| cell.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                let width = widths.get(index).copied().unwrap_or_default();
                let _ = write!(line, "{cell:<width$}   ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn explanation(report: &PodExplanation) -> String {
    let mut out = format!(
        "Pod:         {}\nUID:         {}\nNode:        {}\nController:  {}\n",
        report.pod,
        report.uid,
        if report.node.is_empty() {
            "<not scheduled>"
        } else {
            &report.node
        },
        report.controller
    );
    for nic in &report.nics {
        let _ = writeln!(out, "\nNIC {}", nic.nic);
        let rows: Vec<Vec<String>> = nic
            .sources
            .iter()
            .enumerate()
            .map(|(index, source)| {
                vec![
                    (index + 1).to_string(),
                    if source.applies { "decides" } else { "-" }.to_string(),
                    source.source.to_string(),
                    source.detail.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(&["#", "USED", "SOURCE", "DETAIL"], &rows)));
        for family in &nic.families {
            let _ = writeln!(
                out,
                "  IPv{} pools (try order: {})",
                family.ip_version,
                if family.order.is_empty() {
                    "none".to_string()
                } else {
                    family.order.join(", ")
                }
            );
            let rows: Vec<Vec<String>> = family
                .pools
                .iter()
                .map(|pool| {
                    vec![
                        pool.pool.clone(),
                        pool.verdict.to_string(),
                        pool.reason.clone(),
                    ]
                })
                .collect();
            out.push_str(&indent(&table(&["POOL", "VERDICT", "REASON"], &rows)));
        }
        let _ = writeln!(out, "  ADD now: {}", nic.add);
    }
    if let Some(addresses) = &report.addresses {
        let _ = writeln!(
            out,
            "\nAddresses (SpiderEndpoint of UID {}): {}",
            addresses.endpoint_uid,
            if addresses.agree {
                "records, pools and endpoint agree"
            } else {
                "DISAGREE"
            }
        );
        let rows: Vec<Vec<String>> = addresses
            .records
            .iter()
            .map(|line| {
                vec![
                    line.nic.clone(),
                    line.address.clone(),
                    line.pool.clone(),
                    line.record.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["NIC", "ADDRESS", "POOL", "RECORD"],
            &rows,
        )));
        for problem in &addresses.problems {
            let _ = writeln!(out, "  problem: {problem}");
        }
    }
    out
}

pub fn free(report: &FreeReport) -> String {
    let mut out = format!(
        "{} {} (IPv{}, {}): {} addresses, {} free\n",
        report.kind, report.name, report.ip_version, report.subnet, report.total, report.free_count
    );
    let mut rows = Vec::new();
    for (state, ranges) in [
        ("free", &report.free),
        ("reserved", &report.reserved),
        ("excluded", &report.excluded),
    ] {
        for range in ranges {
            rows.push(vec![state.to_string(), range.clone(), String::new()]);
        }
    }
    for used in &report.used {
        rows.push(vec![
            "used".to_string(),
            used.ips.clone(),
            used.holder.clone(),
        ]);
    }
    out.push_str(&table(&["STATE", "ADDRESSES", "HOLDER"], &rows));
    out
}

pub fn check(report: &CheckReport) -> String {
    let mut out = format!(
        "Checked {}: {} pools, {} subnets, {} endpoints, {} pods\n",
        report.scope, report.pools, report.subnets, report.endpoints, report.pods
    );
    if report.violations.is_empty() {
        out.push_str("consistent: no violation\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{} violation(s) ({})",
        report.violations.len(),
        report.summary()
    );
    let rows: Vec<Vec<String>> = report
        .violations
        .iter()
        .map(|line| vec![line.kind.to_string(), line.message.clone()])
        .collect();
    out.push_str(&table(&["KIND", "VIOLATION"], &rows));
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let text = table(
            &["A", "BB"],
            &[
                vec!["long-cell".into(), "x".into()],
                vec!["s".into(), "y".into()],
            ],
        );
        assert_eq!(text, "A           BB\nlong-cell   x\ns           y\n");
    }
}
