//! Work that must run to its end whatever becomes of whoever asked for it.
//! actix drops a request whose client hung up, and with it every future
//! the request was awaiting; a unit of work that commits something the
//! caller must act on (a claim's leases, a login's admission) therefore
//! runs in a task of its own, and what it made for a caller that is gone
//! is undone there.

use std::future::Future;

/// Runs `work` in a task of its own and returns its output; if the caller
/// stopped waiting before the output could be handed over, `undo` gets it
/// instead (in the same task). `None` when the task ended without an output
/// (it panicked, or the runtime is shutting down).
pub(crate) async fn to_end<T, W, U, F>(work: W, undo: U) -> Option<T>
where
    T: Send + 'static,
    W: Future<Output = T> + Send + 'static,
    U: FnOnce(T) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(unanswered) = answer.send(work.await) {
            undo(unanswered).await;
        }
    });
    answered.await.ok()
}

#[cfg(test)]
mod tests {
    use super::to_end;

    #[tokio::test]
    async fn an_answer_nobody_waits_for_is_undone_and_one_received_is_not() {
        let (undone_tx, undone) = tokio::sync::oneshot::channel::<u32>();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
        // The caller gives up once the work is under way, before it ends.
        let caller = tokio::spawn(to_end(
            async move {
                let _ = started_tx.send(());
                let _ = go.await;
                7
            },
            move |v| async move {
                let _ = undone_tx.send(v);
            },
        ));
        started.await.unwrap();
        caller.abort();
        let _ = caller.await;
        go_tx.send(()).unwrap();
        assert_eq!(undone.await.unwrap(), 7);
        // A caller that waits gets the output, and nothing is undone.
        let (kept_tx, kept) = tokio::sync::oneshot::channel::<u32>();
        let got = to_end(async { 8 }, move |v| async move {
            let _ = kept_tx.send(v);
        })
        .await;
        assert_eq!(got, Some(8));
        assert!(kept.await.is_err(), "nothing undone");
    }
}
