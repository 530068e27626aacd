//! The compress dialog's keys (action in, job out), its refusals, its place in the help and
//! the palette, and snapshots of it.

use super::action::Action;
use super::compress_form::CompressForm;
use super::quantsim_tests::submitted;
use super::state::{App, Pane, Popup};
use super::tests::{render, sample_app};
use super::update::{palette_matches, update};
use qsteer::compress::Method;
use qsteer::jobs::JobKind;

fn form(app: &App) -> &CompressForm {
    match app.popups.last() {
        Some(Popup::Compress(f)) => f,
        other => panic!("no compress dialog on top: {other:?}"),
    }
}

#[test]
fn c_opens_the_dialog_with_the_cli_defaults_and_enter_queues_the_job() {
    let (mut app, _d) = sample_app();
    app.focus = Pane::Graph;
    update(&mut app, Action::CompressDialog);
    assert_eq!(*form(&app), CompressForm::new(0));
    assert_eq!(form(&app).target(), 0.5);
    update(&mut app, Action::Left); // method: wsvd ← cp
    update(&mut app, Action::Down); // target: the first digit replaces 50
    for c in ['3', '5'] {
        update(&mut app, Action::Char(c));
    }
    update(&mut app, Action::Down); // candidates 10 → 8
    update(&mut app, Action::Left);
    update(&mut app, Action::Left);
    update(&mut app, Action::Down); // reconstruct on
    update(&mut app, Action::Toggle);
    update(&mut app, Action::Down); // magnitude → greedy
    update(&mut app, Action::Right);
    update(&mut app, Action::Down); // calibration 200 → 190
    update(&mut app, Action::Left);
    let jobs = submitted(&update(&mut app, Action::Confirm));
    assert_eq!(
        jobs,
        [JobKind::Compress {
            variant: 0,
            data: "sample-models/digits".into(),
            method: Method::ChannelPruning,
            target: Some(0.35),
            ratios: None,
            pin: Default::default(),
            exclude: vec![],
            candidates: 8,
            selection: Some("greedy".into()),
            reconstruct: true,
            calibration_size: 190,
            seed: 0,
            threads: 2,
            metric: None,
        }]
    );
    assert!(app.popups.is_empty());
    assert_eq!(app.focus, Pane::Graph, "the focus stays where it was");
}

#[test]
fn svd_sends_no_channel_selection_and_bad_numbers_launch_nothing() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::CompressDialog);
    update(&mut app, Action::Right); // wsvd → ssvd
    let mut f = form(&app).clone();
    f.selection = 1;
    let JobKind::Compress {
        method, selection, ..
    } = f.job("d".as_ref(), 1, &Default::default())
    else {
        panic!("not a compress job");
    };
    assert_eq!((method, selection), (Method::SpatialSvd, None));
    update(&mut app, Action::Down); // target
    update(&mut app, Action::Backspace);
    update(&mut app, Action::Backspace); // 0: no ratio
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert!(app.status.contains("0.01–0.99"), "{}", app.status);
    assert!(matches!(app.popups.last(), Some(Popup::Compress(_))));
}

#[test]
fn without_a_dataset_or_on_a_quantized_variant_the_dialog_says_why() {
    let (mut app, _d) = sample_app();
    app.data_path = None;
    update(&mut app, Action::CompressDialog);
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert!(app.status.contains("--data"), "{}", app.status);
    let screen = render(&app, 80, 24);
    assert!(screen.contains("no dataset"), "{screen}");
    app.popups.clear();
    app.data_path = Some("sample-models/digits".into());
    app.variants[0].encodings_file = Some("variants/0.encodings".into());
    update(&mut app, Action::CompressDialog);
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert!(app.status.contains("quantized"), "{}", app.status);
}

#[test]
fn the_key_is_in_the_help_and_the_palette_runs_it() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::Help);
    assert!(render(&app, 160, 48).contains("compress…"));
    app.popups.clear();
    update(&mut app, Action::Palette);
    for c in "compress".chars() {
        update(&mut app, Action::Char(c));
    }
    let hits = palette_matches("compress");
    assert_eq!(hits[0].key, "c", "{hits:?}");
    update(&mut app, Action::Confirm);
    assert!(matches!(app.popups.last(), Some(Popup::Compress(_))));
}

#[test]
fn snapshots_of_the_dialog() {
    let (mut app, _d) = sample_app();
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        app.focus = Pane::Layers;
        update(&mut app, Action::CompressDialog);
        update(&mut app, Action::Left); // cp shows its channel selection
        insta::assert_snapshot!(format!("popup_compress_{w}x{h}"), render(&app, w, h));
        app.popups.clear();
    }
}

#[test]
fn the_terminal_keys_reach_the_open_dialog() {
    use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
    let (mut app, _d) = sample_app();
    update(&mut app, Action::CompressDialog);
    let key = |c| Event::Key(KeyEvent::new(c, KeyModifiers::NONE));
    assert_eq!(
        super::to_action(&app, key(KeyCode::Right)),
        Some(Action::Right)
    );
    assert_eq!(
        super::to_action(&app, key(KeyCode::Left)),
        Some(Action::Left)
    );
    assert_eq!(
        super::to_action(&app, key(KeyCode::Char(' '))),
        Some(Action::Toggle)
    );
    assert_eq!(
        super::to_action(&app, key(KeyCode::Char('3'))),
        Some(Action::Char('3'))
    );
}

#[test]
fn layers_pane_pins_and_exclusions_go_with_the_job_and_manual_mode_sends_the_pins() {
    let (mut app, _d) = sample_app();
    app.focus = Pane::Layers;
    let first = app.layers[app.layer_order()[0]].name.clone();
    let second = app.layers[app.layer_order()[1]].name.clone();
    update(&mut app, Action::PinLayer(-1));
    update(&mut app, Action::PinLayer(-1)); // first: pinned at 0.8
    update(&mut app, Action::Down);
    update(&mut app, Action::ExcludeLayer); // second: left alone
    assert!(
        app.status.contains("1 pinned, 1 excluded"),
        "{}",
        app.status
    );
    assert!(render(&app, 120, 30).contains(&format!("{first} [pin 0.8]")));
    update(&mut app, Action::CompressDialog);
    let greedy = submitted(&update(&mut app, Action::Confirm));
    let JobKind::Compress {
        target,
        ratios,
        pin,
        exclude,
        ..
    } = &greedy[0]
    else {
        panic!("not a compress job: {greedy:?}");
    };
    assert_eq!((*target, ratios), (Some(0.5), &None));
    assert_eq!(pin.get(&first), Some(&0.8));
    assert_eq!(exclude, std::slice::from_ref(&second));
    update(&mut app, Action::CompressDialog);
    update(&mut app, Action::Up); // the last field: run on
    update(&mut app, Action::Up); // ratios
    update(&mut app, Action::Toggle);
    let manual = submitted(&update(&mut app, Action::Confirm));
    let JobKind::Compress {
        target,
        ratios,
        exclude,
        ..
    } = &manual[0]
    else {
        panic!("not a compress job: {manual:?}");
    };
    assert_eq!(*target, None);
    assert_eq!(ratios.as_ref().map(|r| r.len()), Some(1));
    assert!(exclude.is_empty());
}
