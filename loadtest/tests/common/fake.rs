//! A tiny blocking fake broker, one thread per connection, that misbehaves on purpose: it
//! refuses CONNECT with a given return code, acknowledges every publish but forwards only
//! nine in ten, or hangs up on its subscribers.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vireo_codec::{
    Ack, BytesMut, ConnAck, Packet, PacketId, ProtocolVersion, QoS, QosPid, ReasonCode, SubAck,
    decode,
};

/// How the fake misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Answer every CONNECT with this return code and close.
    Refuse(u8),
    /// Accept everything, but do not forward every `n`-th publish.
    DropEvery(u64),
    /// Forward everything until the `n`-th publish, then hang up on the subscribers right
    /// after forwarding it: the FIN follows the data at once.
    HangUpAfter(u64),
}

struct Fake {
    behaviour: Behaviour,
    subscribers: Mutex<Vec<TcpStream>>,
    publishes: AtomicU64,
}

/// Starts the fake on a free loopback port; it lives until the test process ends.
pub fn start(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Arc::new(Fake {
        behaviour,
        subscribers: Mutex::new(Vec::new()),
        publishes: AtomicU64::new(0),
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let fake = Arc::clone(&fake);
            std::thread::spawn(move || serve(stream, &fake));
        }
    });
    addr
}

fn send(s: &mut TcpStream, p: &Packet) -> io::Result<()> {
    let mut out = BytesMut::new();
    p.encode(ProtocolVersion::V311, &mut out)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    s.write_all(&out)
}

fn serve(mut s: TcpStream, fake: &Fake) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(p) = decode(&mut buf, ProtocolVersion::V311, 1 << 20)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            if !on_packet(&mut s, fake, p)? {
                return Ok(());
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Handles one packet; `false` ends the connection.
fn on_packet(s: &mut TcpStream, fake: &Fake, p: Packet) -> io::Result<bool> {
    match p {
        Packet::Connect(_) => {
            let code = match fake.behaviour {
                Behaviour::Refuse(code) => code,
                Behaviour::DropEvery(_) | Behaviour::HangUpAfter(_) => 0,
            };
            send(s, &Packet::ConnAck(ConnAck::new(false, ReasonCode(code))))?;
            return Ok(code == 0);
        }
        Packet::Subscribe(sub) => {
            let codes = sub
                .filters
                .iter()
                .map(|f| ReasonCode::granted(f.1.qos))
                .collect();
            send(s, &Packet::SubAck(SubAck::new(sub.packet_id, codes)))?;
            fake.subscribers.lock().unwrap().push(s.try_clone()?);
        }
        Packet::Publish(mut p) => {
            match p.qos {
                QosPid::AtMostOnce => {}
                QosPid::AtLeastOnce(id) => send(s, &Packet::PubAck(Ack::new(id)))?,
                QosPid::ExactlyOnce(id) => send(s, &Packet::PubRec(Ack::new(id)))?,
            }
            let n = fake.publishes.fetch_add(1, Ordering::Relaxed) + 1;
            let (forward, hang_up) = match fake.behaviour {
                Behaviour::Refuse(_) => return Ok(true),
                Behaviour::DropEvery(every) => (!n.is_multiple_of(every), false),
                Behaviour::HangUpAfter(last) => (n <= last, n == last),
            };
            if forward {
                let pid = PacketId::new((n % 65_535) as u16 + 1).unwrap();
                p.qos = QosPid::new(p.qos().min(QoS::AtLeastOnce), pid);
                let mut subscribers = fake.subscribers.lock().unwrap();
                for sub in subscribers.iter_mut() {
                    send(sub, &Packet::Publish(p.clone()))?;
                    if hang_up {
                        sub.shutdown(Shutdown::Both)?;
                    }
                }
                if hang_up {
                    subscribers.clear();
                }
            }
        }
        Packet::PubRel(a) => send(s, &Packet::PubComp(Ack::new(a.packet_id)))?,
        Packet::PingReq => send(s, &Packet::PingResp)?,
        Packet::Disconnect(_) => return Ok(false),
        _ => {}
    }
    Ok(true)
}
