//! Where slow, blocking work runs (engine reads and writes of a snapshot stream, bcrypt):
//! off the async workers on tokio's blocking threads. The simulator has no threads: there
//! the work runs in place, and costs no simulated time. The one place that knows.

use std::fmt;

/// Runs blocking work (engine reads and writes, password hashing) off the async threads;
/// in the simulator, which has no threads, right here. `None` if it panicked.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    start_blocking(work).wait().await
}

/// Blocking work started at once off the async threads and waited for later, so the caller
/// overlaps it with its own (a snapshot's sender reads the next chunk while it sends this
/// one; its receiver reads the next chunk from the network while it writes this one). In
/// the simulator, which has no threads, the work runs right away.
#[must_use = "the work's result is only known by waiting for it"]
pub struct BlockingTask<T> {
    #[cfg(not(madsim))]
    handle: tokio::task::JoinHandle<T>,
    #[cfg(madsim)]
    done: Option<T>,
}

impl<T> fmt::Debug for BlockingTask<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingTask").finish_non_exhaustive()
    }
}

pub fn start_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> BlockingTask<T> {
    BlockingTask {
        #[cfg(not(madsim))]
        handle: tokio::task::spawn_blocking(work),
        #[cfg(madsim)]
        done: Some(work()),
    }
}

impl<T> BlockingTask<T> {
    /// The work's result; `None` if it panicked.
    pub async fn wait(self) -> Option<T> {
        #[cfg(not(madsim))]
        {
            self.handle.await.ok()
        }
        #[cfg(madsim)]
        {
            self.done
        }
    }
}
