//! Billing: one row per accepted outbound De-Mail (written with its archive entry, in
//! the same transaction), and the report per cost unit and period.

use demail_core::DeMailOption;
use serde::Serialize;
use std::collections::BTreeMap;

/// Billing facts of one outbound De-Mail.
pub struct Bill<'a> {
    pub queue_id: &'a str,
    pub sender: &'a str,
    pub cost_unit: &'a str,
    pub recipients: usize,
    pub options: &'a str,
    /// Who sent it, as the archive's actor (`kerberos:peter@REALM`); empty when unknown.
    pub person: &'a str,
}

/// The table in the archive's SQLite database and its queries.
pub(crate) mod sqlite {
    use super::Bill;
    use rusqlite::{params, Connection};

    pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS billing (
    id INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    queue_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    cost_unit TEXT NOT NULL,
    recipients INTEGER NOT NULL,
    options TEXT NOT NULL,
    person TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS billing_time ON billing(time);
";

    pub fn insert(c: &Connection, time: i64, b: &Bill<'_>) -> rusqlite::Result<()> {
        c.execute(
            "INSERT INTO billing (time, queue_id, sender, cost_unit, recipients, options, person) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![time, b.queue_id, b.sender, b.cost_unit, b.recipients as i64, b.options, b.person],
        )
        .map(|_| ())
    }

    /// Rows with `from <= time < to` (unix seconds): (cost_unit, recipients, options).
    pub fn rows(c: &Connection, from: i64, to: i64) -> rusqlite::Result<Vec<(String, i64, String)>> {
        let mut st =
            c.prepare("SELECT cost_unit, recipients, options FROM billing WHERE time >= ?1 AND time < ?2 ORDER BY id")?;
        let rows = st.query_map(params![from, to], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    }
}

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
