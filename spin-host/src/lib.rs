//! # liveshop-spin-host: the Spin app, run here
//!
//! The Spin CLI is in no registry this project installs from, so the tests run the Spin app
//! (`functions/spin`, a `wasi:http/handler@0.3.0` component) on this host: wasmtime 48 with
//! WASI 0.2 and 0.3 and `wasi:http` 0.3 from `wasmtime-wasi(-http)`, and the Spin interfaces the
//! app imports, implemented here on one SQLite file ([`kv`]):
//!
//! - `spin:key-value/key-value@3.0.0` (open, get, set, delete);
//! - `wasi:keyvalue/store` + `wasi:keyvalue/atomics@0.2.0-draft2` (open, get, compare-and-swap),
//!   which Spin 3 also provides, on the same stores;
//! - `spin:variables/variables@3.0.0` (the app's settings).
//!
//! As Spin does, every request gets a fresh instance, and requests run concurrently: two
//! instances may handle the same room at once, which is what the app's compare-and-swap is for.
//! Nothing else is offered: a component that imports more fails to link.

pub mod app;
pub mod kv;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Frame, Incoming};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{Accessor, Component, HasData, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::kv::{Cas, Kv};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "host",
        imports: { default: trappable },
        with: {
            "spin:key-value/key-value.store": crate::kv::Label,
            "wasi:keyvalue/store.bucket": crate::kv::Label,
            "wasi:keyvalue/atomics.cas": crate::kv::Cas,
        },
    });
}

use bindings::spin::key_value::key_value as spin_kv;
use bindings::spin::variables::variables;
use bindings::wasi::keyvalue::{atomics, store as wasi_kv};

/// The stores an app may open: Spin's `key_value_stores = ["default"]`.
const STORES: [&str; 1] = ["default"];

/// What a response body carries from the instance to hyper: frames as the component writes them.
type Body = UnsyncBoxBody<Bytes, ErrorCode>;

/// One instance's view of the host.
struct Ctx {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    kv: Kv,
    variables: Arc<BTreeMap<String, String>>,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: Default::default() }
    }
}

/// The app, compiled once, and what its instances share.
pub struct SpinHost {
    engine: Engine,
    pre: ServicePre<Ctx>,
    kv: Kv,
    variables: Arc<BTreeMap<String, String>>,
}

impl SpinHost {
    /// Compiles the app at `wasm` and opens (or creates) the key-value file `kv`; `variables`
    /// are the app's settings, by their Spin names (lower case).
    pub fn new(wasm: &Path, kv: &Path, variables: BTreeMap<String, String>) -> anyhow::Result<SpinHost> {
        let mut config = Config::new();
        config.wasm_component_model_async(true);
        let engine = Engine::new(&config)?;
        let component = Component::from_file(&engine, wasm)?;
        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        bindings::Host_::add_to_linker::<_, Spin>(&mut linker, |c| c)?;
        let pre = ServicePre::new(linker.instantiate_pre(&component)?)?;
        Ok(SpinHost { engine, pre, kv: Kv::open(kv)?, variables: Arc::new(variables) })
    }

    /// Serves HTTP/1.1 on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            // A streamed body goes out in several writes: without this, each answer waits for
            // the client's delayed ACK (40 ms).
            stream.set_nodelay(true)?;
            let host = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| host.clone().handle(peer, req));
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }

    /// Binds `addr` and serves on it in the background; the address it got.
    pub async fn start(self: Arc<Self>, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        tokio::spawn(self.serve(listener));
        Ok(local)
    }

    /// One request on a fresh instance. The instance lives until its response body ends (or the
    /// client goes away), so a streamed answer keeps running.
    async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        mut req: hyper::Request<Incoming>,
    ) -> anyhow::Result<hyper::Response<Body>> {
        // As Spin does: the client's address, for the app's per-address limits.
        req.headers_mut().insert("spin-client-addr", http::HeaderValue::from_str(&peer.to_string())?);
        let ctx = Ctx {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            kv: self.kv.clone(),
            variables: self.variables.clone(),
        };
        let mut store = Store::new(&self.engine, ctx);
        let service = self.pre.instantiate_async(&mut store).await?;
        let (head_tx, head_rx) = oneshot::channel();
        let (body_tx, body_rx) = mpsc::channel::<Result<Frame<Bytes>, ErrorCode>>(16);
        let req = req.map(|body| body.map_err(|e| ErrorCode::InternalError(Some(e.to_string()))));
        tokio::spawn(async move {
            let (req, io) =
                wasmtime_wasi_http::p3::Request::from_http(wasmtime_wasi_http::default_hooks(), req);
            let ran = store
                .run_concurrent(async move |store| -> wasmtime::Result<()> {
                    let answer = async {
                        let res = match service.handle(store, req).await? {
                            Ok(res) => res,
                            Err(code) => {
                                let _ = head_tx.send(Err(code));
                                return Ok(());
                            }
                        };
                        let res = store.with(|store| res.into_http(store, async { Ok(()) }))?;
                        let (parts, mut body) = res.into_parts();
                        let _ = head_tx.send(Ok(parts));
                        while let Some(frame) = body.frame().await {
                            let frame = frame.map_err(|e| ErrorCode::InternalError(Some(e.to_string())));
                            if body_tx.send(frame).await.is_err() {
                                break;
                            }
                        }
                        wasmtime::Result::<()>::Ok(())
                    };
                    let (answered, _) = futures_util::future::join(answer, io).await;
                    answered
                })
                .await;
            if let Err(e) | Ok(Err(e)) =
                ran.map_err(anyhow::Error::from).map(|r| r.map_err(anyhow::Error::from))
            {
                tracing::warn!("spin app: {e:#}");
            }
        });
        let parts = match head_rx.await {
            Ok(Ok(parts)) => parts,
            Ok(Err(code)) => anyhow::bail!("the app failed the request: {code:?}"),
            Err(_) => anyhow::bail!("the app trapped before answering"),
        };
        let frames =
            futures_util::stream::unfold(body_rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        Ok(hyper::Response::from_parts(parts, http_body_util::StreamBody::new(frames).boxed_unsync()))
    }
}

fn spin_error(e: kv::KvError) -> spin_kv::Error {
    spin_kv::Error::Other(e.to_string())
}

fn wasi_error(e: kv::KvError) -> wasi_kv::Error {
    wasi_kv::Error::Other(e.to_string())
}

/// The interfaces whose functions are `async` in WIT get the instance's store through an
/// [`wasmtime::component::Accessor`]; the store's data is the [`Ctx`].
struct Spin;

impl HasData for Spin {
    type Data<'a> = &'a mut Ctx;
}

impl spin_kv::Host for Ctx {}

impl spin_kv::HostStore for Ctx {
    fn drop(&mut self, store: Resource<kv::Label>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl spin_kv::HostStoreWithStore<Ctx> for Spin {
    async fn open(
        accessor: &Accessor<Ctx, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<kv::Label>, spin_kv::Error>> {
        if !STORES.contains(&label.as_str()) {
            return Ok(Err(spin_kv::Error::NoSuchStore));
        }
        accessor.with(|mut access| Ok(Ok(access.get().table.push(kv::Label(label))?)))
    }

    async fn get(
        accessor: &Accessor<Ctx, Self>,
        store: Resource<kv::Label>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        accessor.with(|mut access| {
            let ctx = access.get();
            let label = &ctx.table.get(&store)?.0;
            Ok(ctx.kv.get(label, &key).map(|v| v.map(|(value, _)| value)).map_err(spin_error))
        })
    }

    async fn set(
        accessor: &Accessor<Ctx, Self>,
        store: Resource<kv::Label>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        accessor.with(|mut access| {
            let ctx = access.get();
            let label = &ctx.table.get(&store)?.0;
            Ok(ctx.kv.set(label, &key, &value).map_err(spin_error))
        })
    }

    async fn delete(
        accessor: &Accessor<Ctx, Self>,
        store: Resource<kv::Label>,
        key: String,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        accessor.with(|mut access| {
            let ctx = access.get();
            let label = &ctx.table.get(&store)?.0;
            Ok(ctx.kv.delete(label, &key).map_err(spin_error))
        })
    }
}

impl wasi_kv::Host for Ctx {
    fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<kv::Label>, wasi_kv::Error>> {
        if !STORES.contains(&identifier.as_str()) {
            return Ok(Err(wasi_kv::Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(kv::Label(identifier))?))
    }
}

impl wasi_kv::HostBucket for Ctx {
    fn get(
        &mut self,
        bucket: Resource<kv::Label>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        let label = self.table.get(&bucket)?.0.clone();
        Ok(self.kv.get(&label, &key).map(|v| v.map(|(value, _)| value)).map_err(wasi_error))
    }

    fn set(
        &mut self,
        bucket: Resource<kv::Label>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let label = &self.table.get(&bucket)?.0;
        Ok(self.kv.set(label, &key, &value).map_err(wasi_error))
    }

    fn delete(
        &mut self,
        bucket: Resource<kv::Label>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_kv::Error>> {
        let label = &self.table.get(&bucket)?.0;
        Ok(self.kv.delete(label, &key).map_err(wasi_error))
    }

    /// Pages of [`kv::PAGE`] keys in order; the cursor is the last key of the page before.
    fn list_keys(
        &mut self,
        bucket: Resource<kv::Label>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_kv::KeyResponse, wasi_kv::Error>> {
        let label = &self.table.get(&bucket)?.0;
        Ok(self
            .kv
            .keys_after(label, cursor.as_deref())
            .map(|(keys, cursor)| wasi_kv::KeyResponse { keys, cursor })
            .map_err(wasi_error))
    }

    fn drop(&mut self, bucket: Resource<kv::Label>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for Ctx {
    fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let taken = self.table.delete(cas)?;
        match self.kv.swap(&taken, &value) {
            Ok(true) => Ok(Ok(())),
            // The guest gets its handle back, to read what is there now and try again.
            Ok(false) => {
                let fresh = self.kv.cas(&taken.label, &taken.key).map_err(wasmtime::Error::msg)?;
                Ok(Err(atomics::CasError::CasFailed(self.table.push(fresh)?)))
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(wasi_error(e)))),
        }
    }
}

impl atomics::HostCas for Ctx {
    fn new(
        &mut self,
        bucket: Resource<kv::Label>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, wasi_kv::Error>> {
        let label = self.table.get(&bucket)?.0.clone();
        match self.kv.cas(&label, &key) {
            Ok(cas) => Ok(Ok(self.table.push(cas)?)),
            Err(e) => Ok(Err(wasi_error(e))),
        }
    }

    fn current(&mut self, cas: Resource<Cas>) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl variables::Host for Ctx {}

impl variables::HostWithStore<Ctx> for Spin {
    async fn get(
        accessor: &Accessor<Ctx, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, variables::Error>> {
        let value = accessor.with(|mut access| access.get().variables.get(&name).cloned());
        Ok(value.ok_or(variables::Error::Undefined(name)))
    }
}
