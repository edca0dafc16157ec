//! Fan-out objects: when a room holds `FANOUT_THRESHOLD` sockets itself, further viewers' sockets
//! are accepted by fan-out objects `"{room}#{k}"` instead. The room stays the only writer: a
//! fan-out object holds sockets and nothing else. It forwards its clients' frames and closes to
//! the room, and the room sends it, in order, the frames for its clients (one batch per event and
//! fan-out object, sent one after another), so every viewer sees every event in the room's order.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use liveshop_room::filter::TokenBucket;
use serde::{Deserialize, Serialize};
use worker::*;

use crate::{error, frame_check, now_ms};

/// What the room asks a fan-out object to do, in order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Item {
    /// A frame to every socket of the object.
    All(String),
    /// A frame to one connection.
    To(u64, String),
    Close(u64, u16, String),
}

/// A fan-out socket's attachment: its connection id in the room and the room.
#[derive(Serialize, Deserialize)]
struct Attachment {
    conn: u64,
    room: String,
}

#[durable_object]
pub struct Fanout {
    state: State,
    env: Env,
    /// Sockets by connection id, rebuilt from attachments after an eviction.
    sockets: RefCell<Option<HashMap<u64, WebSocket>>>,
    /// Accepted sockets the room has not welcomed yet. Frames for everyone that come before a
    /// socket's welcome predate its connection (the room sends them while it waits for
    /// `/accept`), and the welcome's snapshot already holds them: the socket skips them.
    unwelcomed: RefCell<HashSet<u64>>,
    buckets: RefCell<HashMap<u64, TokenBucket>>,
}

impl DurableObject for Fanout {
    fn new(state: State, env: Env) -> Self {
        Fanout {
            state,
            env,
            sockets: RefCell::new(None),
            unwelcomed: RefCell::new(HashSet::new()),
            buckets: RefCell::new(HashMap::new()),
        }
    }

    /// Only the room calls this object: `/accept` (a socket upgrade) and `/deliver`.
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match req.path().as_str() {
            "/accept" => {
                let header = |name: &str| req.headers().get(name).ok().flatten().unwrap_or_default();
                let conn: u64 = header("x-liveshop-conn").parse().map_err(|_| "a connection id")?;
                let room = header("x-liveshop-room");
                let pair = WebSocketPair::new()?;
                self.state.accept_web_socket(&pair.server);
                pair.server.serialize_attachment(&Attachment { conn, room })?;
                self.with_sockets(|s| s.insert(conn, pair.server));
                self.unwelcomed.borrow_mut().insert(conn);
                let headers = Headers::new();
                if let Some(p) = req.headers().get("sec-websocket-protocol")? {
                    headers.set("sec-websocket-protocol", &p)?;
                }
                Ok(Response::from_websocket(pair.client)?.with_headers(headers))
            }
            "/deliver" => {
                let items: Vec<Item> = req.json().await?;
                let mut unwelcomed = self.unwelcomed.borrow_mut();
                self.with_sockets(|sockets| {
                    for item in items {
                        match item {
                            Item::All(frame) => {
                                for (conn, ws) in sockets.iter() {
                                    if !unwelcomed.contains(conn) {
                                        let _ = ws.send_with_str(&frame);
                                    }
                                }
                            }
                            Item::To(conn, frame) => {
                                // The first frame the room sends one connection is its welcome.
                                unwelcomed.remove(&conn);
                                if let Some(ws) = sockets.get(&conn) {
                                    let _ = ws.send_with_str(&frame);
                                }
                            }
                            Item::Close(conn, code, reason) => {
                                unwelcomed.remove(&conn);
                                if let Some(ws) = sockets.remove(&conn) {
                                    let _ = ws.close(Some(code), Some(reason));
                                }
                            }
                        }
                    }
                });
                Response::empty()
            }
            _ => error(404, "not_found", "no such endpoint"),
        }
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        let Some(a) = attachment(&ws) else { return Ok(()) };
        let checked = {
            let mut buckets = self.buckets.borrow_mut();
            frame_check(&self.env, buckets.entry(a.conn), message, now_ms())
        };
        match checked {
            Ok(text) => self.tell_room(&a, "_fanout_message", Some(text)).await,
            Err((code, reason)) => {
                let _ = ws.close(Some(code), Some(reason));
                self.forget(&a);
                self.tell_room(&a, "_fanout_close", None).await
            }
        }
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        if let Some(a) = attachment(&ws) {
            self.forget(&a);
            self.tell_room(&a, "_fanout_close", None).await?;
        }
        let _ = ws.close(Some(1000), Some(""));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
        if let Some(a) = attachment(&ws) {
            self.forget(&a);
            self.tell_room(&a, "_fanout_close", None).await?;
        }
        Ok(())
    }
}

fn attachment(ws: &WebSocket) -> Option<Attachment> {
    ws.deserialize_attachment().ok().flatten()
}

impl Fanout {
    fn with_sockets<R>(&self, f: impl FnOnce(&mut HashMap<u64, WebSocket>) -> R) -> R {
        let mut slot = self.sockets.borrow_mut();
        let sockets = slot.get_or_insert_with(|| {
            let ws = self.state.get_websockets();
            ws.into_iter().filter_map(|ws| Some((attachment(&ws)?.conn, ws))).collect()
        });
        f(sockets)
    }

    fn forget(&self, a: &Attachment) {
        self.with_sockets(|s| s.remove(&a.conn));
        self.unwelcomed.borrow_mut().remove(&a.conn);
        self.buckets.borrow_mut().remove(&a.conn);
    }

    /// A client's frame (or its leaving) for the room, which handles it like its own socket's.
    async fn tell_room(&self, a: &Attachment, action: &str, text: Option<String>) -> Result<()> {
        let body = serde_json::json!({ "conn": a.conn, "text": text }).to_string();
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let req = Request::new_with_init(&format!("https://room/v1/rooms/{}/{action}", a.room), &init)?;
        self.env.durable_object("ROOMS")?.get_by_name(&a.room)?.fetch_with_request(req).await?;
        Ok(())
    }
}
