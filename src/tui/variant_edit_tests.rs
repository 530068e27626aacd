//! Rename, note, tag and delete from the variants pane, through the terminal's keys: the
//! prompts, the refusals, and the change as the workspace keeps it.

use super::action::Action;
use super::state::{App, Pane, Popup};
use super::tests::{render, sample_app};
use super::update::{update, Effect};
use super::variant_edit::{perform, VariantEdit};
use crossterm::event::{Event, KeyCode as K, KeyEvent, KeyModifiers};
use qsteer::experiment::Workspace;
use qsteer::jobs::{JobEvent, JobId, JobKind};

fn keys(app: &mut App, codes: &[K]) -> Vec<Effect> {
    let mut effects = vec![];
    for &code in codes {
        let key = Event::Key(KeyEvent::new(code, KeyModifiers::NONE));
        if let Some(action) = super::to_action(app, key) {
            effects = update(app, action);
        }
    }
    effects
}

fn typed(text: &str) -> Vec<K> {
    text.chars().map(K::Char).collect()
}

/// The sample app with a child 1 of the base and a grandchild 2, the cursor on `row`.
fn app_with_children(row: usize) -> (App, tempfile::TempDir, Workspace) {
    let (mut app, dir) = sample_app();
    let mut ws = Workspace::open(&dir.path().join("ws")).unwrap();
    let model = ws.load_variant_model(0).unwrap();
    let child = ws.add_variant(0, "copy", &model).unwrap();
    ws.add_variant(child, "copy", &model).unwrap();
    app.variants = ws.variants().to_vec();
    keys(&mut app, &[K::Char('3')]);
    for _ in 0..row {
        keys(&mut app, &[K::Char('j')]);
    }
    (app, dir, ws)
}

#[test]
fn rename_note_and_tag_through_the_keys() {
    let (mut app, _d, mut ws) = app_with_children(2);
    // Letters that are keys elsewhere (q, s, x) are typed into the prompt.
    let mut rename = vec![K::Char('R')];
    rename.extend(typed("qsx best"));
    keys(&mut app, &rename);
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        insta::assert_snapshot!(format!("rename_prompt_{w}x{h}"), render(&app, w, h));
    }
    let effects = keys(&mut app, &[K::Enter]);
    let edit = VariantEdit::Rename(2, "qsx best".into());
    assert_eq!(effects, vec![Effect::EditVariant(edit.clone())]);
    assert!(app.popups.is_empty() && !app.should_quit);
    assert_eq!(
        perform(&mut ws, &edit).unwrap(),
        "variant 2 renamed qsx best"
    );
    app.variants = ws.variants().to_vec();
    let screen = render(&app, 80, 24);
    assert!(screen.contains("2 qsx best"), "{screen}");

    let mut note = vec![K::Char('N')];
    note.extend(typed("for the demo"));
    note.push(K::Enter);
    let effects = keys(&mut app, &note);
    let [Effect::EditVariant(edit)] = &effects[..] else {
        panic!("one edit")
    };
    perform(&mut ws, edit).unwrap();
    let mut tag = vec![K::Char('T')];
    tag.extend(typed("ship"));
    tag.push(K::Enter);
    let effects = keys(&mut app, &tag);
    let [Effect::EditVariant(edit)] = &effects[..] else {
        panic!("one edit")
    };
    assert_eq!(perform(&mut ws, edit).unwrap(), "variant 2 tagged ship");
    let again = Workspace::open(ws.dir()).unwrap();
    let v = again.variant(2).unwrap();
    assert_eq!(
        (v.notes.as_str(), v.tags.clone()),
        ("for the demo", vec!["ship".to_string()])
    );
    // The same tag again takes it off.
    assert_eq!(
        perform(&mut ws, edit).unwrap(),
        "variant 2: tag ship taken off"
    );
    // A tag of two words is refused in the prompt.
    let mut two = vec![K::Char('T')];
    two.extend(typed("a b"));
    two.push(K::Enter);
    assert!(keys(&mut app, &two).is_empty());
    assert_eq!(app.status, "a tag is one word");
}

#[test]
fn delete_asks_and_is_refused_for_the_base_parents_and_busy_variants() {
    // The base (row 0) and a parent (row 1): refused at once, nothing asked.
    for (row, why) in [(0, "base model"), (1, "has children (2)")] {
        let (mut app, _d, _ws) = app_with_children(row);
        assert!(keys(&mut app, &[K::Char('D')]).is_empty());
        assert!(app.popups.is_empty(), "row {row}");
        assert!(app.status.contains(why), "{}", app.status);
    }
    // A job of this session on it.
    let (mut app, _d, mut ws) = app_with_children(2);
    update(
        &mut app,
        Action::Job(JobEvent::Queued {
            id: JobId(4),
            kind: JobKind::FoldBn { variant: 2 },
        }),
    );
    app.focus = Pane::Variants;
    keys(&mut app, &[K::Char('D')]);
    assert!(app.status.contains("job #4 runs on it"), "{}", app.status);
    assert!(app.popups.is_empty());
    update(&mut app, Action::Job(JobEvent::Cancelled { id: JobId(4) }));
    app.focus = Pane::Variants;
    // Asked; any key but y / Enter keeps it.
    keys(&mut app, &[K::Char('D')]);
    assert_eq!(app.popups.last(), Some(&Popup::ConfirmDelete(2)));
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        insta::assert_snapshot!(format!("delete_confirm_{w}x{h}"), render(&app, w, h));
    }
    assert!(keys(&mut app, &[K::Char('n')]).is_empty());
    assert_eq!(app.status, "variant 2 kept");
    let effects = keys(&mut app, &[K::Char('D'), K::Char('y')]);
    let delete = VariantEdit::Delete(2);
    assert_eq!(effects, vec![Effect::EditVariant(delete.clone())]);
    let done = perform(&mut ws, &delete).unwrap();
    assert!(
        done.starts_with("variant 2 deleted with its 1 file"),
        "{done}"
    );
    assert!(ws.variant(2).is_none());
    assert!(!ws.dir().join("variants/2.onnx").exists());
}
