//! Dialogs open with the values they last launched with, across restarts: each dialog
//! writes its settings as a small JSON object into the workspace (`settings.dialogs`,
//! written atomically with the index) when it launches, and reads back the fields it
//! knows when it opens. A field missing, of the wrong type or out of range (a value from
//! another version) keeps the dialog's default, so an old or odd workspace never stops a
//! dialog opening.

use super::state::App;
use super::update::Effect;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The dialogs that remember, by their key in `settings.dialogs`.
pub const QUANTSIM: &str = "quantsim";
pub const SWEEP: &str = "sweep";
pub const COMPRESS: &str = "compress";
pub const FINETUNE: &str = "finetune";

/// What `dialog` last launched with, if anything.
pub fn saved<'a>(app: &'a App, dialog: &str) -> Option<&'a Value> {
    app.dialogs.get(dialog)
}

/// Keep `values` as `dialog`'s memory for this session, and the effect that stores it in
/// the workspace for the next.
pub fn remember(app: &mut App, dialog: &'static str, values: Value) -> Effect {
    app.dialogs.insert(dialog.to_string(), values.clone());
    Effect::RememberDialog { dialog, values }
}

/// `slot` = the saved `key`, when it is there and reads as a `T` that `ok` accepts.
pub fn take<T: DeserializeOwned>(saved: &Value, key: &str, slot: &mut T, ok: impl Fn(&T) -> bool) {
    if let Some(v) = saved
        .get(key)
        .and_then(|v| serde_json::from_value::<T>(v.clone()).ok())
        .filter(|v| ok(v))
    {
        *slot = v;
    }
}

/// `slot` = the position in `names` of the saved name under `key` (choices are saved by
/// name, so a reordered or longer list still reads them right).
pub fn take_named<'a>(
    saved: &Value,
    key: &str,
    slot: &mut usize,
    names: impl IntoIterator<Item = &'a str>,
) {
    let Some(name) = saved.get(key).and_then(Value::as_str) else {
        return;
    };
    if let Some(i) = names.into_iter().position(|n| n == name) {
        *slot = i;
    }
}

/// Whether `v` is in `range` (inclusive), for [`take`].
pub fn within(range: (usize, usize)) -> impl Fn(&usize) -> bool {
    move |v| (range.0..=range.1).contains(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_of_the_wrong_type_or_range_keep_the_default() {
        let saved = json!({"bits": 4, "big": 99, "text": "x", "scheme": "mse", "gone": "nope"});
        let (mut bits, mut big, mut text) = (8usize, 8usize, 8usize);
        take(&saved, "bits", &mut bits, within((2, 16)));
        take(&saved, "big", &mut big, within((2, 16)));
        take(&saved, "text", &mut text, |_| true);
        assert_eq!((bits, big, text), (4, 8, 8));
        let (mut scheme, mut gone) = (0usize, 0usize);
        take_named(
            &saved,
            "scheme",
            &mut scheme,
            ["minmax", "tf_enhanced", "mse"],
        );
        take_named(&saved, "gone", &mut gone, ["minmax"]);
        assert_eq!((scheme, gone), (2, 0));
    }
}
