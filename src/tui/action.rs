//! The one vocabulary of state changes: keys, the palette and job events all become an
//! `Action`, and only `update` applies them.

use super::state::Pane;
use qsteer::jobs::JobEvent;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    FocusNext,
    FocusPrev,
    Focus(Pane),
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    /// Enter: open / make current / confirm.
    Confirm,
    /// Esc: close the top popup.
    Close,
    /// Space: toggle (select a row in a dialog, collapse in the graph).
    Toggle,
    Help,
    /// The status line's messages, whole, newest last.
    Messages,
    /// Jobs pane: the selected job full screen (settings, whole error and log).
    OpenJob,
    Palette,
    Filter,
    SortNext,
    SortReverse,
    /// Layers pane: quant-noise table ↔ costs table.
    ToggleNoise,
    /// Layers pane: compress heat table ↔ the other tables.
    ToggleHeat,
    /// Layers pane: leave the selected layer alone when compressing (or not).
    ExcludeLayer,
    /// Layers pane: pin the selected layer's compression ratio one step up (+1) or down.
    PinLayer(i8),
    /// Graph or layers pane: keep the selected node's quantizers FP32 in the next quantsim
    /// (or quantize it again).
    KeepFp32,
    MarkA,
    MarkB,
    SwapAB,
    StepA(i32),
    StepB(i32),
    Compare,
    CancelJob,
    EvaluateDialog,
    QuantsimDialog,
    /// The post-training fix dialog.
    FixDialog,
    /// The compress dialog (greedy per-layer ratios to a target MAC ratio).
    CompressDialog,
    /// The SSVD→CP sweep dialog.
    SweepDialog,
    /// The fine-tuning dialog (built-in training) on the chosen variant, or on a
    /// sweep decision's picked candidates.
    FineTuneDialog,
    /// Reopen the pending sweep decision.
    SweepDecision,
    /// The scatter view: score against cost of the variants, the Pareto front marked
    /// (closes it when open).
    Plot,
    /// Export the selected quantized variant (QDQ ONNX + encodings).
    Export,
    /// Variants pane: name, note, tag or delete the selected variant.
    RenameVariant,
    NoteVariant,
    TagVariant,
    DeleteVariant,
    Quit,
    /// Typed text in an input field (filter, palette query, dialog number).
    Char(char),
    Backspace,
    /// Left/right in a dialog's settings form.
    Left,
    Right,
    Job(JobEvent),
    /// Open the Slurm settings dialog.
    SlurmDialog,
    /// The cluster's partitions arrived from `sinfo` (or why not).
    SlurmPartitions(Result<Vec<String>, String>),
    /// An analysis was read for a variant (None: it has none).
    Analysis(u32, Option<Box<qsteer::quant::analysis::Analysis>>),
    /// A variant's compression record was read (None: it has none), with the heat grid of
    /// its cached dictionary when the file is there.
    Compression(
        u32,
        Option<Box<qsteer::compress::record::CompressionRecord>>,
        Option<super::heat::HeatGrid>,
    ),
    /// The smallest MAC ratio a method reaches on a variant was measured (or why not).
    Reach(super::reach::ReachKey, Result<f64, String>),
    Resize,
    /// A line for the footer from work done off the UI thread.
    Notice(String),
}
