//! An export read back as a read-only [`Store`], so that an auditor's `archive verify
//! --export DIR` runs the same checks as on the live archive: entries, message files,
//! the head the gateway knew, and the signed, time-stamped checkpoints.

use super::{AccessRecord, Archive, Checkpoint, Entry, Store, Tx};
use demail_core::Error;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "demail-archive-export/2";

pub struct ExportStore {
    dir: PathBuf,
    entries: Vec<(Entry, String)>,
    head: Option<(i64, String)>,
    checkpoints: Vec<Checkpoint>,
    /// When the export was written (unix ms).
    pub exported: i64,
}

fn unreadable(what: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        "archive.export_unreadable",
        "Der Export ist nicht lesbar (manifest.json, checkpoints.json).",
        "The export cannot be read (manifest.json, checkpoints.json).",
    )
    .caused_by(format!("{what}: {why}"))
}

fn read_only() -> Error {
    Error::new("archive.export_read_only", "Ein Export wird nur gelesen.", "An export is read only.")
}

/// The archive of an export directory.
pub fn open(dir: &Path) -> Result<(Archive, i64), Error> {
    let s = ExportStore::open(dir)?;
    let exported = s.exported;
    Ok((Archive::with_head_row(Box::new(s)), exported))
}

impl ExportStore {
    pub fn open(dir: &Path) -> Result<ExportStore, Error> {
        let read = |name: &str| -> Result<serde_json::Value, Error> {
            let text = std::fs::read(dir.join(name)).map_err(|e| unreadable(name, e))?;
            serde_json::from_slice(&text).map_err(|e| unreadable(name, e))
        };
        let m = read("manifest.json")?;
        let format = m["format"].as_str().unwrap_or_default();
        if format != FORMAT {
            return Err(unreadable("manifest.json", format!("format {format:?}, expected {FORMAT}")));
        }
        let mut entries = Vec::new();
        for v in m["entries"].as_array().into_iter().flatten() {
            let file = v["file"].as_str().unwrap_or_default().to_string();
            // Only a plain file name: an export cannot make us read elsewhere.
            if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
                return Err(unreadable("manifest.json", format!("file name {file:?}")));
            }
            let e: Entry = serde_json::from_value(v.clone()).map_err(|e| unreadable("manifest.json", e))?;
            entries.push((e, file));
        }
        entries.sort_by_key(|(e, _)| e.seq);
        let head =
            m["head"].as_object().and_then(|h| Some((h.get("seq")?.as_i64()?, h.get("hash")?.as_str()?.to_string())));
        let cps = read("checkpoints.json")?;
        let mut checkpoints = Vec::new();
        for v in cps.as_array().into_iter().flatten() {
            checkpoints.push(
                Checkpoint::from_json(v).ok_or_else(|| unreadable("checkpoints.json", "a checkpoint is garbled"))?,
            );
        }
        checkpoints.sort_by_key(|c| c.seq);
        Ok(ExportStore {
            dir: dir.to_path_buf(),
            entries,
            head,
            checkpoints,
            exported: m["exported"].as_i64().unwrap_or(0),
        })
    }
}

impl Store for ExportStore {
    fn append(
        &self,
        _: &mut dyn FnMut(&mut dyn Tx) -> Result<Entry, Error>,
        _: &dyn Fn(i64, &str) -> Result<(), Error>,
    ) -> Result<Entry, Error> {
        Err(read_only())
    }
    fn transact(
        &self,
        _: &mut dyn FnMut(&mut dyn Tx) -> Result<(), Error>,
        _: &dyn Fn(i64, &str) -> Result<(), Error>,
    ) -> Result<(), Error> {
        Err(read_only())
    }
    fn entries(&self, after: i64, limit: usize) -> Result<Vec<Entry>, Error> {
        let start = self.entries.partition_point(|(e, _)| e.seq <= after);
        Ok(self.entries[start..].iter().take(limit).map(|(e, _)| e.clone()).collect())
    }
    fn data(&self, seq: i64) -> Result<Vec<u8>, Error> {
        let i = self.entries.binary_search_by_key(&seq, |(e, _)| e.seq).map_err(|_| unreadable("entry", seq))?;
        let file = &self.entries[i].1;
        // A missing message file reads as empty: `verify` names the entry as altered.
        Ok(std::fs::read(self.dir.join(file)).unwrap_or_default())
    }
    fn is_recorded(&self, _: &str) -> Result<bool, Error> {
        Ok(false)
    }
    fn billing_rows(&self, _: i64, _: i64) -> Result<Vec<(String, i64, String)>, Error> {
        Ok(Vec::new())
    }
    fn access_records(&self) -> Result<Vec<AccessRecord>, Error> {
        Ok(Vec::new())
    }
    fn checkpoints(&self) -> Result<Vec<Checkpoint>, Error> {
        Ok(self.checkpoints.clone())
    }
    fn newest_checkpoint(&self) -> Result<Option<(i64, String)>, Error> {
        Ok(self.checkpoints.last().map(|c| (c.seq, c.hash.clone())))
    }
    fn head_row(&self) -> Result<Option<(i64, String)>, Error> {
        Ok(self.head.clone())
    }
}
