//! HTTP test helpers: run the `server` example as a child process (read its
//! stdout lines, send it signals, read its JSON report), and a small
//! HTTP/1.1 client over `std::net::TcpStream` that can stop anywhere in a
//! response (after the head, between chunks) and tell a clean end of stream
//! (FIN) from a reset.
//!
//! Readiness is always a line the child prints, never a sleep.

// Each test file that includes `support` uses only a part of this.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

// ===== The example as a child process =====

/// The `server` example running as a child process (built once per test
/// binary, in the test's profile, by `support::process::example`).
pub struct ServerProcess {
    child: Child,
    /// The address it listens on (from its `listening` line).
    pub addr: SocketAddr,
    lines: Receiver<String>,
    report: PathBuf,
    stderr: Arc<Mutex<String>>,
    /// Ends when the child's stderr does; joined once the child exited.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl ServerProcess {
    /// Starts the example on `127.0.0.1:0` with `args` and `--report`, and
    /// waits for its `ready` line.
    pub fn start(args: &[&str]) -> ServerProcess {
        ServerProcess::start_under(&[], args)
    }

    /// Like [`start`](ServerProcess::start), but runs the example through
    /// `wrapper` (a command that execs its arguments, e.g. `prlimit
    /// --nofile=24`), so the process and its id are the example's.
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> ServerProcess {
        static N: AtomicU32 = AtomicU32::new(0);
        let report = std::env::temp_dir().join(format!(
            "winddown-server-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&report);
        let binary = super::process::example("server");
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        let mut child = cmd
            .args(["--addr", "127.0.0.1:0", "--report"])
            .arg(&report)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server example");
        let (tx, lines) = crossbeam_channel::unbounded();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
            // Dropping `tx` here tells `wait_exit` the child closed stdout.
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            report,
            stderr,
            stderr_reader: Some(stderr_reader),
            exit: None,
        };
        let listening = server.expect_line(|l| l.starts_with("listening "), secs(30));
        server.addr = listening["listening ".len()..]
            .parse()
            .expect("listening <addr>");
        server.expect_line(|l| l == "ready", secs(30));
        server
    }

    /// Returns the child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for a stdout line matching `want` (skipping the
    /// others) and returns it. Panics on timeout or if the child exits.
    pub fn expect_line(&self, want: impl Fn(&str) -> bool, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok(line) if want(&line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no expected line within {within:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("server exited before the line"),
            }
        }
    }

    /// Returns the CPU time (user + system) the child has used so far, from
    /// `/proc/<pid>/stat` (Linux; clock ticks taken as 100 per second).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/<pid>/stat");
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("(comm)") + 2..]
            .split(' ')
            .collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(self.pid() as i32);
        kill(pid, Signal::SIGTERM).expect("send SIGTERM");
    }

    /// Waits up to `within` for the child to exit (its stdout closes), and
    /// returns its status, and every stdout line not yet read.
    pub fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + within;
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_deadline(deadline) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("server did not exit within {within:?}"),
            }
        }
        let status = self.child.wait().expect("wait for the server");
        self.exit = Some(status);
        self.join_stderr();
        (status, rest)
    }

    /// Waits until all of the exited child's stderr has been read.
    fn join_stderr(&mut self) {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }

    /// Reads the JSON report the child wrote with `--report`.
    pub fn report(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.report).expect("the report was written");
        serde_json::from_str(&text).expect("the report is JSON")
    }

    /// Returns what the child wrote to stderr so far (all of it, its `{:#}`
    /// report included, once `wait_exit` returned).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            // A failed test: end the child we started, by its id.
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.join_stderr();
        }
        if std::thread::panicking() {
            eprintln!("--- server stderr ---\n{}", self.stderr());
        }
        let _ = std::fs::remove_file(&self.report);
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ===== The client =====

/// A response as the client read it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the response says `Connection: close`.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection. Every read has a timeout (default 10 s), so a
/// test fails rather than hangs.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(secs(10)))?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
    }

    /// Sends raw bytes.
    pub fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.stream.write_all(raw)
    }

    /// Returns a second handle on the socket, to send on while another
    /// thread reads.
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().unwrap()
    }

    /// Shuts the sending side down: the server reads an end of stream.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// Sends a keep-alive `GET path`.
    pub fn get(&mut self, path: &str) -> io::Result<()> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }

    /// One `read` into the buffer; a read interrupted by a signal (EINTR:
    /// a handler in this test process, not the server) is retried.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn fill_or_eof(&mut self) -> io::Result<()> {
        match self.fill()? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    /// Reads a line ending in CRLF (without it).
    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill_or_eof()?;
        }
    }

    /// Reads a status line and headers; the body is left to read.
    pub fn read_head(&mut self) -> io::Result<HttpResponse> {
        let status_line = self.line()?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status = parts.next().and_then(|s| s.parse().ok());
        let (true, Some(status)) = (version.starts_with("HTTP/1."), status) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            ));
        };
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(HttpResponse {
            status,
            headers,
            body: Vec::new(),
        })
    }

    /// Reads exactly `n` body bytes.
    fn read_exact_body(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill_or_eof()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one chunk of a chunked body: `Some(data)`, or `None` for the
    /// final chunk (trailers skipped). An end of stream before the final
    /// chunk is `UnexpectedEof`.
    pub fn read_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let size_line = self.line()?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, size_line.clone()))?;
        if size == 0 {
            while !self.line()?.is_empty() {}
            return Ok(None);
        }
        let data = self.read_exact_body(size)?;
        if !self.line()?.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunk not followed by CRLF",
            ));
        }
        Ok(Some(data))
    }

    /// Reads a whole response: head, then a `Content-Length` or chunked
    /// body, or (neither) everything up to the end of stream.
    pub fn read_response(&mut self) -> io::Result<HttpResponse> {
        let mut r = self.read_head()?;
        if let Some(n) = r.header("content-length") {
            let n = n
                .parse()
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            r.body = self.read_exact_body(n)?;
        } else if r
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            while let Some(chunk) = self.read_chunk()? {
                r.body.extend(chunk);
            }
        } else {
            while self.fill()? > 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        Ok(r)
    }

    /// Reads until the end of stream and expects nothing more: `Ok(())` for
    /// a clean FIN, an error for data or a reset (or the read timeout).
    pub fn read_eof(&mut self) -> io::Result<()> {
        match self.fill()? {
            0 if self.buf.is_empty() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "expected end of stream, got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            )),
        }
    }
}

/// `GET path` on a new connection with `Connection: close`; returns the
/// response, and checks that the server then closed cleanly.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    let mut c = Client::connect(addr)?;
    c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())?;
    let r = c.read_response()?;
    c.read_eof()?;
    Ok(r)
}
