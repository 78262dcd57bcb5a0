//! Where ndshm follows Python's `multiprocessing` / `multiprocessing.shared_memory` (issue
//! 13): argument rules and unnamed creation.

mod common;

use ndarray::{Ix1, Ix2};
use ndshm::{
    ByteQueue, Connection, CreateOptions, ErrorKind, NdArrayQueue, Queue, SharedList, SharedMap,
    SharedNdArray,
};

/// `what` failed with `InvalidArgument`, and its message names `arg`.
fn assert_invalid<T>(what: &str, r: ndshm::Result<T>, arg: &str) {
    match r {
        Ok(_) => panic!("{what}: size 0 was accepted"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
            assert!(
                e.to_string().contains(arg),
                "{what}: the message should name {arg}: {e}"
            );
        }
    }
}

#[test]
fn size_zero_is_an_error_where_python_says_so_and_zero_length_arrays_stay_valid() {
    // Python: SharedMemory(create=True, size=0) raises ValueError. ndshm's counterparts of
    // sized containers refuse a size of 0 the same way, anonymous and named alike, and
    // leave nothing behind.
    let n = common::Name::new("size0");
    assert_invalid("Queue::new(0)", Queue::<u64>::new(0), "capacity");
    assert_invalid(
        "Queue::create(.., 0)",
        Queue::<u64>::create(&n, 0),
        "capacity",
    );
    assert_invalid("ByteQueue::new(0, 64)", ByteQueue::new(0, 64), "capacity");
    assert_invalid("ByteQueue::new(4, 0)", ByteQueue::new(4, 0), "slot_size");
    assert_invalid(
        "ByteQueue::create(.., 4, 0)",
        ByteQueue::create(&n, 4, 0),
        "slot_size",
    );
    assert_invalid("NdArrayQueue::new(0)", NdArrayQueue::new(0), "capacity");
    assert_invalid("Connection::pair(0, 64)", Connection::pair(0, 64), "slots");
    assert_invalid("Connection::pair(4, 0)", Connection::pair(4, 0), "chunk");
    assert_invalid(
        "Connection::create(.., 0, 64)",
        Connection::create(&n, 0, 64),
        "slots",
    );
    assert_invalid(
        "Connection::create(.., 4, 0)",
        Connection::create(&n, 4, 0),
        "chunk",
    );
    assert_invalid("SharedList::new(0)", SharedList::<u32>::new(0), "capacity");
    assert_invalid(
        "SharedList::create(.., 0)",
        SharedList::<u32>::create(&n, 0),
        "capacity",
    );
    assert_invalid(
        "SharedMap::new(0)",
        SharedMap::<u32, u32>::new(0),
        "capacity",
    );
    assert_invalid(
        "SharedMap::create(.., 0)",
        SharedMap::<u32, u32>::create(&n, 0),
        "capacity",
    );
    assert!(!n.path().exists(), "a refused creation left its segment");

    // numpy's np.zeros(0) is a valid array, and so is ndshm's, named or unique.
    let a = SharedNdArray::<f64, Ix1>::zeros(&n, 0).unwrap();
    assert_eq!((a.len(), a.shape()), (0, &[0][..]));
    let b = SharedNdArray::<u8, Ix2>::zeros(CreateOptions::unique(), (3, 0)).unwrap();
    assert_eq!(b.len(), 0);
    assert_eq!(b.shape(), &[3, 0]);
    drop(a);
    assert!(!n.path().exists());
}

#[test]
fn create_without_a_name_generates_a_unique_one() {
    // Python: SharedMemory(create=True, size=16) picks a name; `shm.name` tells it.
    let a = SharedNdArray::<u8, Ix1>::zeros(CreateOptions::unique(), 16).unwrap();
    let b = SharedNdArray::<u8, Ix1>::zeros(CreateOptions::unique(), 16).unwrap();
    assert_ne!(a.name(), b.name());
    for x in [&a, &b] {
        assert!(x.name().starts_with("ndshm-"), "{}", x.name());
        assert!(x.name().len() > "ndshm-".len() + 8, "{}", x.name());
    }
    let paths: Vec<_> = [&a, &b]
        .iter()
        .map(|x| std::path::Path::new("/dev/shm").join(x.name()))
        .collect();
    assert!(paths.iter().all(|p| p.exists()));
    // Other processes attach by the generated name.
    let name = a.name().to_owned();
    ndshm::Process::spawn(move || -> ndshm::Result<()> {
        // SAFETY: read-only attachment; the parent does not write the array meanwhile.
        let attached = unsafe { SharedNdArray::<u8, Ix1>::open_read_only(&name)? };
        assert_eq!(attached.len(), 16);
        Ok(())
    })
    .unwrap()
    .join()
    .unwrap();
    // The sync and ipc types generate names the same way.
    let q = Queue::<u32>::create(CreateOptions::unique(), 4).unwrap();
    let q_path = std::path::Path::new("/dev/shm").join(q.name().unwrap());
    assert!(q.name().unwrap().starts_with("ndshm-"));
    assert!(q_path.exists());
    drop((a, b, q));
    assert!(
        paths.iter().all(|p| !p.exists()),
        "dropping the creators unlinks"
    );
    assert!(!q_path.exists(), "dropping the queue's creator unlinks");
}
