//! A DNS server on the loopback for tests, answering from a fixed set of records, and the
//! records to give it.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

/// A DNS record, as [`records`] makes them.
pub use hickory_resolver::proto::rr::Record;

/// A DNS server on loopback UDP, answering from a fixed set of records.
pub async fn dns_server(records: Vec<hickory_resolver::proto::rr::Record>) -> SocketAddr {
    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0; 4096];
        loop {
            let Ok((length, from)) = socket.recv_from(&mut buffer).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buffer[..length]) else {
                continue;
            };
            let mut answer = Message::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(query.op_code())
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true)
                .add_queries(query.queries().to_vec());
            let mut known = false;
            for question in query.queries() {
                for record in &records {
                    if record.name() == question.name() {
                        known = true;
                        if record.record_type() == question.query_type() {
                            answer.add_answer(record.clone());
                        }
                    }
                }
            }
            if !known {
                answer.set_response_code(ResponseCode::NXDomain);
            }
            if let Ok(bytes) = answer.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    address
}

pub mod records {
    //! Records for [`super::dns_server`].
    use hickory_resolver::proto::rr::rdata::{A, SRV};
    use hickory_resolver::proto::rr::{Name, RData, Record};

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    pub fn srv(owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
        Record::from_rdata(
            name(owner),
            60,
            RData::SRV(SRV::new(priority, weight, port, name(target))),
        )
    }

    pub fn a(owner: &str, address: [u8; 4]) -> Record {
        Record::from_rdata(
            name(owner),
            60,
            RData::A(A::from(std::net::Ipv4Addr::from(address))),
        )
    }
}
