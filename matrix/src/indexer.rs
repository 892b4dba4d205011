//! The search indexer: brings the search index up to the event stream in the background, a
//! batch at a time, so that storing an event does not wait for its words to be indexed.
//! The search endpoint indexes what is left before it reads (see
//! [`crate::store::Store::index_pending`]).

use std::sync::Arc;
use std::time::Duration;

use crate::Services;

/// How long new events gather before they are indexed together.
const GATHER: Duration = Duration::from_millis(500);

/// Starts the indexer; it ends when the server shuts down.
pub fn spawn(services: Arc<Services>) {
    tokio::spawn(async move {
        let mut positions = services.store.subscribe();
        loop {
            tokio::select! {
                changed = positions.changed() => if changed.is_err() { return },
                () = services.shutting_down() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                () = services.shutting_down() => return,
            }
            if let Err(error) = services.store.index_pending().await {
                tracing::warn!(%error, "events not indexed for search; trying again later");
            }
        }
    });
}
