//! The performer serving one AVS now, or why there is none.
//!
//! The pipeline reads an AVS's slot once per task and keeps that performer for the whole call; a
//! deploy swaps the slot ([`PerformerSlot::replace`]), so new tasks go to the new performer while
//! the old one finishes what it holds ([`crate::rollout`]).

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use crate::{Performer, PerformerState};

/// The performer serving one AVS now, or why there is none.
pub struct PerformerSlot(RwLock<Slot>);

struct Slot {
    performer: Option<Arc<dyn Performer>>,
    /// Why `performer` is `None` (for errors, readiness and `ListPerformers`).
    absent: String,
}

impl PerformerSlot {
    /// A slot holding `performer`.
    pub fn new(performer: Arc<dyn Performer>) -> PerformerSlot {
        PerformerSlot(RwLock::new(Slot {
            performer: Some(performer),
            absent: String::new(),
        }))
    }

    /// An empty slot; `why` says why (e.g. "no performer deployed").
    pub fn empty(why: impl Into<String>) -> PerformerSlot {
        PerformerSlot(RwLock::new(Slot {
            performer: None,
            absent: why.into(),
        }))
    }

    /// The current performer, or why there is none.
    pub fn current(&self) -> Result<Arc<dyn Performer>, String> {
        let slot = self.0.read().unwrap_or_else(PoisonError::into_inner);
        slot.performer.clone().ok_or_else(|| slot.absent.clone())
    }

    /// The current performer's state; [`PerformerState::Failed`] when there is none.
    pub fn state(&self) -> PerformerState {
        self.current().map_or(PerformerState::Failed, |p| p.state())
    }

    /// Puts `performer` in service; returns the one it replaces.
    pub fn replace(&self, performer: Arc<dyn Performer>) -> Option<Arc<dyn Performer>> {
        let mut slot = self.0.write().unwrap_or_else(PoisonError::into_inner);
        slot.performer.replace(performer)
    }

    /// Takes the performer out of service; `why` is what tasks are told.
    pub fn clear(&self, why: String) -> Option<Arc<dyn Performer>> {
        let mut slot = self.0.write().unwrap_or_else(PoisonError::into_inner);
        slot.absent = why;
        slot.performer.take()
    }
}

impl fmt::Debug for PerformerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.current() {
            Ok(p) => f.debug_tuple("PerformerSlot").field(&p).finish(),
            Err(why) => f.debug_tuple("PerformerSlot").field(&why).finish(),
        }
    }
}
