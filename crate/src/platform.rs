//! What differs between native and the browser, kept to this file.

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
