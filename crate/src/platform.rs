//! What differs between native and the browser, kept to this file.

/// A boxed stream: `Send` natively (a server's tasks move between threads), not in the browser
/// (fetch's streams live on the page's one thread).
#[cfg(not(target_arch = "wasm32"))]
pub type BoxStream<T> = futures::stream::BoxStream<'static, T>;
#[cfg(target_arch = "wasm32")]
pub type BoxStream<T> = futures::stream::LocalBoxStream<'static, T>;

/// Lets the browser's event loop run between tokens (an abort, a repaint, a message to a
/// worker); natively a no-op. WebGPU readbacks yield by themselves, the CPU path would not.
pub async fn yield_now() {
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen::JsCast;
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            let global = js_sys::global();
            let timer = js_sys::Reflect::get(&global, &"setTimeout".into())
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
            let scheduled = timer.is_some_and(|f| f.call2(&global, &resolve, &0.into()).is_ok());
            if !scheduled {
                let _ = resolve.call0(&wasm_bindgen::JsValue::NULL);
            }
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
}

/// Runs the CPU forward pass `f` where the matrix kernels run. Natively that is a thread of
/// rayon's pool: the kernels' fork-joins then include the thread that drives the pass, and no
/// third thread competes with the pool's two for two cores while the pool's threads spin between
/// kernels. In the browser, on the page's (or worker's) own thread.
#[cfg(not(target_arch = "wasm32"))]
pub async fn on_kernel_threads<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    // The pass completes without waiting on anything (the host path's readbacks are ready at
    // once), so it is polled to completion here. Not with an executor's `block_on`: a worker
    // waiting inside a fork-join may steal another caller's pass, and executors refuse to nest.
    rayon::scope(|_| {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::yield_now();
        }
    })
}
#[cfg(target_arch = "wasm32")]
pub async fn on_kernel_threads<F: std::future::Future>(f: F) -> F::Output {
    f.await
}

/// Waits `d` (tokio natively, `setTimeout` in the browser).
pub async fn sleep(d: std::time::Duration) {
    #[cfg(not(target_arch = "wasm32"))]
    tokio::time::sleep(d).await;
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen::JsCast;
        let ms = d.as_millis().min(i32::MAX as u128) as i32;
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            let global = js_sys::global();
            if let Some(f) = js_sys::Reflect::get(&global, &"setTimeout".into())
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            {
                let _ = f.call2(&global, &resolve, &ms.into());
            }
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
}

/// `f`, or `None` if it takes longer than `d`.
pub async fn timeout<F: std::future::Future>(d: std::time::Duration, f: F) -> Option<F::Output> {
    #[cfg(not(target_arch = "wasm32"))]
    return tokio::time::timeout(d, f).await.ok();
    #[cfg(target_arch = "wasm32")]
    {
        use futures::future::{Either, select};
        match select(std::pin::pin!(f), std::pin::pin!(sleep(d))).await {
            Either::Left((out, _)) => Some(out),
            Either::Right(_) => None,
        }
    }
}

/// The HTTP client of the remote upstream (the browser's fetch in wasm, which has no connect
/// timeout of its own: the idle timeout bounds the wait there).
pub fn http_client(connect_timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder();
    #[cfg(not(target_arch = "wasm32"))]
    let builder = builder.connect_timeout(connect_timeout);
    #[cfg(target_arch = "wasm32")]
    let _ = connect_timeout;
    builder.build()
}

/// Whether a failed request may succeed when tried again.
pub fn transient(e: &reqwest::Error) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    if e.is_connect() {
        return true;
    }
    e.is_timeout() || e.is_request()
}
