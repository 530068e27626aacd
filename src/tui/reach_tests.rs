//! The compress and sweep dialogs measure what their method can reach on the variant when
//! they open, show it, and refuse a target below it.

use super::action::Action;
use super::state::Popup;
use super::tests::{render, sample_app};
use super::update::{update, Effect};
use qsteer::compress::Method;
use qsteer::experiment::Workspace;

#[test]
fn the_sweep_dialog_shows_the_ssvd_floor_and_refuses_a_cssvd_below_it() {
    let (mut app, d) = sample_app();
    let effects = update(&mut app, Action::SweepDialog);
    let key = (0, Method::SpatialSvd, 10);
    assert!(effects.contains(&Effect::ProbeReach(key)), "{effects:?}");
    assert!(render(&app, 80, 24).contains("reachable MAC ratio: measuring…"));
    // Asked once, not at every key.
    assert!(!update(&mut app, Action::Down).contains(&Effect::ProbeReach(key)));
    // Measured as the app does, on the workspace.
    let ws = Workspace::open(&d.path().join("ws")).unwrap();
    let floor = super::reach::measure(&ws, key, app.data_path.clone().unwrap(), app.pinned.clone())
        .unwrap();
    assert!(floor > 0.0 && floor < 1.0, "{floor}");
    update(&mut app, Action::Reach(key, Ok(floor)));
    let screen = render(&app, 80, 24);
    assert!(
        screen.contains(&format!("reachable: down to {floor:.3}")),
        "{screen}"
    );
    // The defaults are reachable on the sample (0.50 ≥ the floor): Enter would run.
    assert!(screen.contains("Enter runs spatial SVD"), "{screen}");
    // A target (and so a first Cssvd) of 0.10 is below it: said before Enter.
    update(&mut app, Action::Up); // the target field
    for c in "10".chars() {
        update(&mut app, Action::Char(c));
    }
    for (w, h) in [(80, 24), (120, 40)] {
        let screen = render(&app, w, h);
        assert!(
            screen.contains(&format!("Cssvd 0.10 < reachable {floor:.3}: raise it to")),
            "{screen}"
        );
        insta::assert_snapshot!(format!("sweep_unreachable_{w}x{h}"), screen);
    }
    // Enter refuses with the whole message in the status line; nothing is queued.
    let effects = update(&mut app, Action::Confirm);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Submit(_))),
        "{effects:?}"
    );
    assert!(app.status.contains("raise it to"), "{}", app.status);
    assert!(matches!(app.popups.last(), Some(Popup::Sweep(_))));
}

#[test]
fn the_compress_dialog_refuses_an_unreachable_target_and_takes_a_reachable_one() {
    let (mut app, _d) = sample_app();
    update(&mut app, Action::CompressDialog);
    let key = (0, Method::WeightSvd, 10);
    update(&mut app, Action::Reach(key, Ok(0.8)));
    // Target 0.50 < 0.80: refused.
    assert!(update(&mut app, Action::Confirm).is_empty());
    assert!(
        app.status
            .contains("target 0.50 < reachable 0.800: raise it to 0.80"),
        "{}",
        app.status
    );
    // Target 0.85: queued.
    update(&mut app, Action::Down); // the target field
    for c in "85".chars() {
        update(&mut app, Action::Char(c));
    }
    let effects = update(&mut app, Action::Confirm);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Submit(_))),
        "{effects:?}"
    );
}
