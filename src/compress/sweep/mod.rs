//! The SSVD→CP sweep (DESIGN.md §3): SSVD candidates at several Cssvd, the ones that leave
//! room pre-selected (decision 1), CP on top of the picked ones at C / Cssvd and its
//! neighbours, and the pick (decision 2). This module holds the arithmetic and the report;
//! the sweep job (`jobs::sweep`) makes the candidates.

pub mod plan;
pub mod report;

pub use plan::{
    advise, ccp_candidates, default_cssvd, normalize_ratios, pick, preselect_limit, preselected,
    stop_advice, Advice,
};
pub use report::{SweepPick, SweepReport, SweepRow};
