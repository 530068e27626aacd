//! The current variant and the A/B marks outlive the app: keys that change them store
//! them, and the app opened again on the workspace shows them. Also the start-up Slurm
//! line and long messages.

use super::init;
use super::state::Pane;
use super::tests::{press, render, sample_app};
use super::theme::Theme;
use super::update::{update, Effect};
use crossterm::event::{Event, KeyCode as K, KeyEvent, KeyModifiers};
use std::path::PathBuf;

/// What the key does, as the terminal sends it.
fn effects_of(app: &mut super::state::App, code: K) -> Vec<Effect> {
    let key = Event::Key(KeyEvent::new(code, KeyModifiers::NONE));
    let action = super::to_action(app, key).expect("the key means something here");
    update(app, action)
}

#[test]
fn marking_a_and_b_and_choosing_the_current_variant_are_stored() {
    let (mut app, dir) = sample_app();
    let child = {
        let mut ws = qsteer::experiment::Workspace::open(&dir.path().join("ws")).unwrap();
        let model = ws.load_variant_model(0).unwrap();
        ws.add_variant(0, "copy", &model).unwrap()
    };
    app.variants = qsteer::experiment::Workspace::open(&dir.path().join("ws"))
        .unwrap()
        .variants()
        .to_vec();
    press(&mut app, K::Char('3'));
    assert!(
        effects_of(&mut app, K::Char('b')).contains(&Effect::SaveMarks {
            a: None,
            b: Some(0)
        })
    );
    press(&mut app, K::Char('j'));
    assert!(
        effects_of(&mut app, K::Char('a')).contains(&Effect::SaveMarks {
            a: Some(child),
            b: Some(0)
        })
    );
    // Marking the same again stores nothing.
    let again = effects_of(&mut app, K::Char('a'));
    assert!(
        !again.iter().any(|e| matches!(e, Effect::SaveMarks { .. })),
        "{again:?}"
    );
    let enter = effects_of(&mut app, K::Enter);
    assert!(enter.contains(&Effect::SaveCurrent(child)), "{enter:?}");
}

#[test]
fn the_app_opens_on_the_stored_current_variant_and_marks() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        init::open(
            &PathBuf::from("sample-models/mbv2_digits.onnx"),
            Some(PathBuf::from("sample-models/digits")),
            Some(dir.path().join("ws")),
            Theme::load("mono").unwrap(),
        )
        .unwrap()
    };
    let mut first = open();
    assert_eq!(first.resume, None);
    let model = first.workspace.load_variant_model(0).unwrap();
    let child = first.workspace.add_variant(0, "copy", &model).unwrap();
    first.workspace.set_current(child).unwrap();
    first.workspace.set_marks(Some(child), Some(0)).unwrap();
    drop(first);
    let mut again = open();
    assert_eq!(again.resume, Some(child));
    assert_eq!((again.app.mark_a, again.app.mark_b), (Some(child), Some(0)));
    again.app.cores = 2;
    again.app.focus = Pane::Variants;
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let screen = render(&again.app, w, h);
        let row = |id: u32| {
            screen
                .lines()
                .find(|l| l.contains(&format!("{id} base")) || l.contains(&format!("{id} copy")))
                .unwrap_or_else(|| panic!("variant {id} listed:\n{screen}"))
                .to_string()
        };
        assert!(row(child).contains('A'), "{screen}");
        assert!(row(0).contains('B'), "{screen}");
        insta::assert_snapshot!(format!("reopened_with_marks_{w}x{h}"), screen);
    }
}

/// A machine with Slurm's client but no configuration: one short line, sinfo's reason.
#[test]
fn an_unconfigured_slurm_leaves_one_short_line() {
    let (mut app, _d) = sample_app();
    let sinfo = "sinfo -h -o %P: sinfo: error: resolve_ctls_from_dns_srv: res_nsearch error: \
                 Unknown host\nsinfo: error: fetch_config: DNS SRV lookup failed\nsinfo: error: \
                 _establish_config_source: failed to fetch config\nsinfo: fatal: Could not \
                 establish a configuration source";
    update(
        &mut app,
        super::action::Action::SlurmPartitions(Err(sinfo.into())),
    );
    assert_eq!(
        app.status,
        "Slurm unusable: Could not establish a configuration source"
    );
    let long = format!("sinfo: fatal: {}", "x".repeat(200));
    assert!(super::update::slurm_unusable(&long).chars().count() < 80);
}

/// A path longer than the messages view's line is wrapped by character, not cut.
#[test]
fn the_messages_view_shows_a_long_path_whole_at_80x24() {
    let (mut app, _d) = sample_app();
    let path = format!(
        "/tmp/{}/resnet_digits_v17.qdq.onnx",
        "deep-directory-".repeat(8)
    );
    app.status = format!("exported {path}");
    press(&mut app, K::Char('m'));
    let screen = render(&app, 80, 24);
    let joined: String = screen
        .lines()
        .map(|l| l.trim_start_matches('│').trim_end_matches('│').trim())
        .collect();
    assert!(joined.contains(&path.replace(' ', "")), "{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80));
}
