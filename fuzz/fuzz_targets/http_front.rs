//! The HTTP front end end to end (PROTOCOL §1, §3): any bytes sent on a
//! connection get HTTP/1.1 answers (HTTP/2 frames after the HTTP/2
//! preface), and every error answer is the
//! documented JSON (`{"error":{"code":…,"message":…}}`) — but hyper's own
//! answer to bytes that are not HTTP at all, which is its bare status (400,
//! 414 or 431) with an empty body. The daemon (its router, writer and a
//! real SQLite store in a temp dir) lives for the whole run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;

struct Daemon {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn daemon() -> &'static Daemon {
    static D: OnceLock<Daemon> = OnceLock::new();
    D.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let router = rt
            .block_on(coord_daemon::fuzzing::router(dir.path()))
            .expect("router");
        Daemon {
            rt,
            router,
            _dir: dir,
        }
    })
}

/// The first answer's status and, for an error, its body.
fn first_answer(out: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &out[..end];
    let status = std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()?;
    Some((status, head, &out[end + 4..]))
}

fuzz_target!(|data: &[u8]| {
    let d = daemon();
    let out = d.rt.block_on(coord_daemon::fuzzing::serve_bytes(
        &d.router,
        data,
        Duration::from_millis(300),
    ));
    if out.is_empty() {
        // Nothing complete was sent (or a stream was still open): no answer.
        return;
    }
    // The HTTP/2 connection preface (RFC 9113 §3.4) is prior-knowledge
    // HTTP/2, which the socket speaks (PROTOCOL §1): the answer is HTTP/2
    // frames, the first the server's SETTINGS (type 4, stream 0).
    if data.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") {
        assert!(
            out.len() >= 9 && out[3] == 4 && out[5..9] == [0, 0, 0, 0],
            "an HTTP/2 preface not answered with SETTINGS: {:?}",
            &out[..out.len().min(32)]
        );
        return;
    }
    // An HTTP/1.0 request is answered in HTTP/1.0.
    assert!(
        out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
        "not an HTTP answer: {:?}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
    let Some((status, head, body)) = first_answer(&out) else {
        return;
    };
    if status >= 400 {
        let head = String::from_utf8_lossy(head).to_ascii_lowercase();
        let bare = !head.contains("content-type:") && head.contains("\r\ncontent-length: 0");
        if matches!(status, 400 | 414 | 431) && bare {
            // The HTTP library's answer to what it cannot parse (§3).
            return;
        }
        assert!(
            head.contains("content-type: application/json"),
            "error without JSON: {head}"
        );
        let len: Option<usize> = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok());
        // The answer to HEAD has the head of the error and no body. The
        // parser skips empty lines before a request line (RFC 9112 §2.2),
        // so "\r\n\r\nHEAD …" is a HEAD too.
        let request = {
            let mut r = data;
            while let [b'\r' | b'\n', rest @ ..] = r {
                r = rest;
            }
            r
        };
        let body = match len {
            _ if request.starts_with(b"HEAD ") => return,
            Some(n) if body.len() >= n => &body[..n],
            _ => return, // chunked or cut off: the head was checked
        };
        let v: serde_json::Value = serde_json::from_slice(body).expect("an error body is JSON");
        assert!(
            v["error"]["code"].is_string(),
            "error body without a code: {v}"
        );
    }
});
