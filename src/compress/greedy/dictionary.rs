//! The eval-score dictionary: for each searched layer and candidate ratio, the score with
//! only that layer compressed and the whole model's MACs after. It lives in the workspace's
//! `cache/greedy-<key>.json`, written atomically after every entry, so a killed run resumes
//! where it stopped and a later run with another target reuses it. The tasks of a Slurm
//! array job each fill a share of it into their own `greedy-<key>.part-<i>.json` (one
//! writer per file); reading merges the main file and every part of the same key.
//!
//! Runs of the same key at once share the work: an entry is computed by whoever claims it
//! (an exclusive lock on its claim file in `greedy-<key>.claims/`, released by the kernel
//! if the process dies), the others take it from the file when it is written; the main
//! file is re-read and merged under `greedy-<key>.claims/dictionary.lock` before every
//! write, so no writer drops another's entries.

use crate::compress::scorer::Metric;
use crate::compress::Method;
use crate::fsutil::{lock_exclusive, write_json_atomic};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

/// One evaluation: `layer` alone at `ratio`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub layer: String,
    pub ratio: f64,
    pub score: f64,
    /// Whole-model MACs per sample with this layer compressed (for channel pruning this
    /// includes what winnowing cut upstream).
    pub macs_after: u64,
}

/// What the key is made of, kept in the file for people reading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DictionaryHeader {
    pub method: Method,
    pub metric: Metric,
    pub candidates: Vec<f64>,
    /// The compressor's settings beyond the method (sample shapes, selection, …).
    pub settings: String,
    pub model_hash: String,
    pub dataset_fingerprint: String,
}

impl DictionaryHeader {
    /// sha256 over everything an entry depends on.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"qsteer-greedy-dictionary-v1\0");
        for part in [
            self.method.short(),
            self.metric.name(),
            &self.settings,
            &self.model_hash,
            &self.dataset_fingerprint,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        for c in &self.candidates {
            h.update(c.to_le_bytes());
        }
        crate::model::hex(&h.finalize())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DictionaryFile {
    key: String,
    header: DictionaryHeader,
    entries: Vec<Entry>,
}

/// A shard's part file as written: [`DictionaryFile`]'s fields, borrowed.
#[derive(Serialize)]
struct PartFile<'a> {
    key: &'a str,
    header: &'a DictionaryHeader,
    entries: &'a [Entry],
}

/// One of `count` shares of a dictionary: the entries whose index in (layer, candidate)
/// order is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `I/N`, e.g. `3/8` (tasks counted from 0).
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = || {
            crate::Error::input(format!(
                "--shard {text}: expected I/N with 0 ≤ I < N, e.g. 3/8"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

/// The dictionary of one key, backed by its cache file (none: in memory only).
pub struct Dictionary {
    path: Option<PathBuf>,
    /// The cache directory and the file stem of this key, when cached.
    cache: Option<(PathBuf, String)>,
    /// Every entry known: the main file's and all parts'.
    file: DictionaryFile,
    /// A shard's own entries, the only ones its part file holds (None: the main file,
    /// which holds them all).
    own: Option<Vec<Entry>>,
}

/// Ratios are k/N computed the same way each run; compare with a little slack anyway.
fn same_ratio(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

impl Dictionary {
    /// The dictionary for `header`, with the entries of an earlier run if `cache_dir` holds
    /// one of the same key. An unreadable or foreign file starts afresh (it is a cache).
    pub fn open(cache_dir: Option<&Path>, header: DictionaryHeader) -> Dictionary {
        Dictionary::open_for(cache_dir, header, None)
    }

    /// As [`open`](Self::open), writing to the shard's own part file when `shard` is set.
    /// Entries come from the main file and every part of the key, each (layer, ratio) once.
    pub fn open_for(
        cache_dir: Option<&Path>,
        header: DictionaryHeader,
        shard: Option<Shard>,
    ) -> Dictionary {
        let key = header.key();
        let stem = format!("greedy-{}", &key[..16]);
        let path = cache_dir.map(|d| match shard {
            None => d.join(format!("{stem}.json")),
            Some(s) => d.join(format!("{stem}.part-{}.json", s.index)),
        });
        let mut dict = Dictionary {
            path,
            cache: cache_dir.map(|d| (d.to_path_buf(), stem.clone())),
            file: DictionaryFile {
                key: key.clone(),
                header,
                entries: vec![],
            },
            own: shard.map(|_| vec![]),
        };
        dict.refresh();
        dict
    }

    /// Merge what the files on disk hold now (other runs of the same key write them).
    pub fn refresh(&mut self) {
        let Some((dir, stem)) = &self.cache else {
            return;
        };
        let key = self.file.key.clone();
        let part_prefix = format!("{stem}.part-");
        let mut files = vec![dir.join(format!("{stem}.json"))];
        if let Ok(listing) = std::fs::read_dir(dir) {
            let mut parts: Vec<PathBuf> = listing
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&part_prefix) && n.ends_with(".json"))
                })
                .collect();
            parts.sort();
            files.extend(parts);
        }
        for file in files {
            let mine = self.own.is_some() && Some(&file) == self.path.as_ref();
            let entries = std::fs::read(&file)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<DictionaryFile>(&bytes).ok())
                .filter(|f| f.key == key)
                .map(|f| f.entries)
                .unwrap_or_default();
            for e in entries {
                if let Some(own) = self.own.as_mut().filter(|_| mine) {
                    if !own
                        .iter()
                        .any(|o| o.layer == e.layer && same_ratio(o.ratio, e.ratio))
                    {
                        own.push(e.clone());
                    }
                }
                if self.get(&e.layer, e.ratio).is_none() {
                    self.file.entries.push(e);
                }
            }
        }
    }

    /// The directory of this key's locks and claims (created), when cached.
    fn claims_dir(&self) -> Result<Option<PathBuf>> {
        let Some((dir, stem)) = &self.cache else {
            return Ok(None);
        };
        let claims = dir.join(format!("{stem}.claims"));
        fs::create_dir_all(&claims).map_err(|e| Error::io(&claims, e))?;
        Ok(Some(claims))
    }

    /// Claim the evaluation of `layer` at `ratio` for this process: `None` if another run
    /// holds it (it is computing that entry now). Not cached: always this process's.
    pub fn claim(&self, layer: &str, ratio: f64) -> Result<Option<Claim>> {
        let Some(claims) = self.claims_dir()? else {
            return Ok(Some(Claim(None)));
        };
        let mut h = Sha256::new();
        h.update(layer.as_bytes());
        h.update(b"\0");
        h.update(ratio.to_le_bytes());
        let path = claims.join(format!("{}.claim", &crate::model::hex(&h.finalize())[..16]));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Claim(Some((file, path))))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    pub fn key(&self) -> &str {
        &self.file.key
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.file.entries
    }

    pub fn get(&self, layer: &str, ratio: f64) -> Option<&Entry> {
        self.file
            .entries
            .iter()
            .find(|e| e.layer == layer && same_ratio(e.ratio, ratio))
    }

    /// Add an entry and write the file at once, so a kill loses at most the evaluation
    /// under way. The main file is re-read under the dictionary's lock first, so entries
    /// other runs wrote meanwhile stay.
    pub fn insert(&mut self, entry: Entry) -> Result<()> {
        let _lock = match (&self.own, self.claims_dir()?) {
            (None, Some(claims)) => Some(lock_exclusive(&claims.join("dictionary.lock"))?),
            _ => None,
        };
        self.refresh();
        if let Some(own) = &mut self.own {
            own.push(entry.clone());
        }
        if self.get(&entry.layer, entry.ratio).is_none() {
            self.file.entries.push(entry);
        }
        let Some(p) = &self.path else {
            return Ok(());
        };
        match &self.own {
            None => write_json_atomic(p, &self.file),
            Some(own) => write_json_atomic(
                p,
                &PartFile {
                    key: &self.file.key,
                    header: &self.file.header,
                    entries: own,
                },
            ),
        }
    }
}

/// The right to compute one entry, held until dropped (after the entry is inserted); the
/// kernel releases it if the process dies.
pub struct Claim(Option<(File, PathBuf)>);

impl Drop for Claim {
    fn drop(&mut self) {
        // Removed while still locked: whoever opens the name afterwards finds the entry in
        // the file (inserted before this) when it re-reads after claiming.
        if let Some((_, path)) = &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}
