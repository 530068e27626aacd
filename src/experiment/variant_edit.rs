//! What a user changes on a variant by hand: its name, its note, its tags, and deleting it
//! with its files. Every change is one atomic index write under the workspace lock.

use super::workspace::{file_variant_id, variant_file_names, Workspace};
use crate::{Error, Result};
use std::path::PathBuf;

/// The longest name a variant takes (it is shown in one row of the tree).
const NAME_MAX: usize = 40;

impl Workspace {
    /// Name variant `id` (`""` takes the name off: the tree shows its step again).
    pub fn rename_variant(&mut self, id: u32, name: &str) -> Result<()> {
        let name = name.trim();
        if name.chars().count() > NAME_MAX || name.contains(['\n', '\r', '\t']) {
            return Err(Error::input(format!(
                "variant name '{name}': one line of at most {NAME_MAX} characters"
            )));
        }
        self.update(|ws| {
            ws.variant_mut(id)?.name = (!name.is_empty()).then(|| name.to_string());
            Ok(())
        })
    }

    /// Replace variant `id`'s note.
    pub fn set_note(&mut self, id: u32, note: &str) -> Result<()> {
        let note = note.trim().to_string();
        self.update(|ws| {
            ws.variant_mut(id)?.notes = note;
            Ok(())
        })
    }

    /// Delete variant `id` from the index and its files from `variants/`. Refused for the
    /// base, for a variant with children (their lineage would point nowhere) and for one a
    /// job has not ended on. Returns the files removed.
    pub fn delete_variant(&mut self, id: u32) -> Result<Vec<PathBuf>> {
        let dir = self.dir().to_path_buf();
        self.update(|ws| {
            let v = ws
                .variant(id)
                .ok_or_else(|| Error::input(format!("{}: no variant {id}", dir.display())))?;
            if v.parent.is_none() {
                return Err(Error::input(format!(
                    "variant {id} is the base model: it cannot be deleted"
                )));
            }
            let children: Vec<String> = (ws.variants().iter())
                .filter(|c| c.parent == Some(id))
                .map(|c| c.id.to_string())
                .collect();
            if !children.is_empty() {
                return Err(Error::input(format!(
                    "variant {id} has children ({}): delete them first",
                    children.join(", ")
                )));
            }
            if let Some(job) = unended_job_on(&dir, id)? {
                return Err(Error::input(format!(
                    "variant {id}: job {job} has not ended on it; wait for it or cancel it"
                )));
            }
            ws.remove_from_index(id);
            Ok(())
        })?;
        // After the index no longer lists it: a kill before this leaves unlisted files,
        // which `qsteer workspace repair` would adopt back, never a listed variant
        // without its model.
        let mut removed = Vec::new();
        for name in variant_file_names(&dir)? {
            if file_variant_id(&name) == Some(id) {
                let path = dir.join("variants").join(&name);
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                removed.push(path);
            }
        }
        Ok(removed)
    }
}

/// `#N label` of a job the journal has not seen end whose source is variant `id`.
fn unended_job_on(dir: &std::path::Path, id: u32) -> Result<Option<String>> {
    let history = crate::jobs::load_history(dir)?;
    let job = history
        .interrupted()
        .find(|r| r.kind.variant() == Some(id))
        .map(|r| format!("#{} ({})", r.id, r.kind.label()));
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;
    use std::path::Path;

    fn workspace() -> (tempfile::TempDir, Workspace, Model) {
        let dir = tempfile::tempdir().unwrap();
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-models/mbv2_digits.onnx");
        let model = Model::load(&sample).unwrap();
        let ws = Workspace::open_or_create(dir.path(), &model, "mbv2_digits").unwrap();
        (dir, ws, model)
    }

    #[test]
    fn rename_and_note_are_kept_and_a_bad_name_is_refused() {
        let (dir, mut ws, model) = workspace();
        let child = ws.add_variant(0, "copy", &model).unwrap();
        ws.rename_variant(child, "  deliverable ").unwrap();
        ws.set_note(child, "for the demo").unwrap();
        let again = Workspace::open(dir.path()).unwrap();
        let v = again.variant(child).unwrap();
        assert_eq!(v.name.as_deref(), Some("deliverable"));
        assert_eq!(v.notes, "for the demo");
        let e = ws.rename_variant(child, &"x".repeat(41)).unwrap_err();
        assert!(e.to_string().contains("at most 40"), "{e}");
        ws.rename_variant(child, "").unwrap();
        assert_eq!(
            Workspace::open(dir.path())
                .unwrap()
                .variant(child)
                .unwrap()
                .name,
            None
        );
        assert!(ws
            .set_note(77, "x")
            .unwrap_err()
            .to_string()
            .contains("no variant 77"));
    }

    #[test]
    fn delete_removes_the_files_and_refuses_the_base_parents_and_busy_variants() {
        let (dir, mut ws, model) = workspace();
        let parent = ws.add_variant(0, "copy", &model).unwrap();
        let child = ws.add_variant(parent, "copy", &model).unwrap();
        ws.set_encodings(child, &serde_json::json!({"activation_encodings": {}}))
            .unwrap();
        ws.set_marks(Some(child), Some(0)).unwrap();
        let e = ws.delete_variant(0).unwrap_err();
        assert!(e.to_string().contains("base model"), "{e}");
        let e = ws.delete_variant(parent).unwrap_err();
        assert!(
            e.to_string().contains(&format!("children ({child})")),
            "{e}"
        );
        let removed = ws.delete_variant(child).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(removed.iter().all(|p| !p.exists()));
        let again = Workspace::open(dir.path()).unwrap();
        assert!(again.variant(child).is_none());
        assert_eq!(again.view_marks().a, None, "a mark on it is dropped");
        assert_eq!(again.view_marks().b, Some(0));
        // A job started on the parent and not ended (its journal has no end) holds it.
        let kind = crate::jobs::JobKind::FoldBn { variant: parent };
        let line = serde_json::json!({"id": 9, "state": "started", "time": 1.0, "kind": kind});
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("jobs.jsonl"), format!("{line}\n")).unwrap();
        let e = ws.delete_variant(parent).unwrap_err();
        assert!(e.to_string().contains("job #9"), "{e}");
        assert!(Workspace::open(dir.path())
            .unwrap()
            .variant(parent)
            .is_some());
    }
}
