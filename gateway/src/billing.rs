//! Billing report per cost unit and period, from the rows written at acceptance.

use demail_core::DeMailOption;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Line {
    pub cost_unit: String,
    pub messages: u64,
    pub recipients: u64,
    /// Messages without any option.
    pub plain: u64,
    pub confirmation_of_dispatch: u64,
    pub confirmation_of_receipt: u64,
    pub confirmation_of_retrieve: u64,
    pub private: u64,
    pub authoritative: u64,
}

/// Cost unit of senders that the policy assigns to none.
pub const UNASSIGNED: &str = "(ohne Kostenstelle / unassigned)";

pub fn report(rows: &[(String, i64, String)]) -> Vec<Line> {
    let mut m: BTreeMap<String, Line> = BTreeMap::new();
    for (unit, rcpts, opts) in rows {
        let l = m.entry(unit.clone()).or_insert_with(|| Line { cost_unit: unit.clone(), ..Line::default() });
        l.messages += 1;
        l.recipients += (*rcpts).max(0) as u64;
        let ids: Vec<&str> = opts.split(',').filter(|s| !s.is_empty()).collect();
        if ids.is_empty() {
            l.plain += 1;
        }
        for id in ids {
            match DeMailOption::from_id(id) {
                Some(DeMailOption::ConfirmationOfDispatch) => l.confirmation_of_dispatch += 1,
                Some(DeMailOption::ConfirmationOfReceipt) => l.confirmation_of_receipt += 1,
                Some(DeMailOption::ConfirmationOfRetrieve) => l.confirmation_of_retrieve += 1,
                Some(DeMailOption::Private) => l.private += 1,
                Some(DeMailOption::Authoritative) => l.authoritative += 1,
                None => {}
            }
        }
    }
    m.into_values().collect()
}

fn csv_field(s: &str) -> String {
    // Quote always; double inner quotes; a leading formula character is defused for spreadsheets.
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn to_csv(lines: &[Line]) -> String {
    let mut out = String::from(
        "cost_unit,messages,recipients,plain,confirmation_of_dispatch,confirmation_of_receipt,confirmation_of_retrieve,private,authoritative\r\n",
    );
    for l in lines {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\r\n",
            csv_field(&l.cost_unit),
            l.messages,
            l.recipients,
            l.plain,
            l.confirmation_of_dispatch,
            l.confirmation_of_receipt,
            l.confirmation_of_retrieve,
            l.private,
            l.authoritative
        ));
    }
    out
}

/// Days since 1970-01-01 for a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` → unix seconds at 00:00 UTC.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_csv() {
        let rows = vec![
            ("KST-1".to_string(), 2, "private,confirmation-of-dispatch".to_string()),
            ("KST-1".to_string(), 1, String::new()),
            ("=cmd".to_string(), 1, "authoritative".to_string()),
        ];
        let r = report(&rows);
        let k = r.iter().find(|l| l.cost_unit == "KST-1").unwrap();
        assert_eq!((k.messages, k.recipients, k.plain, k.private, k.confirmation_of_dispatch), (2, 3, 1, 1, 1));
        let csv = to_csv(&r);
        assert!(csv.contains("\"'=cmd\""));
        assert_eq!(parse_date("1970-01-02"), Some(86_400));
        assert_eq!(parse_date("2026-11-27"), Some(1_795_737_600));
        assert_eq!(parse_date("2026-13-01"), None);
    }
}
