#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

#[test]
fn vec_and_strings_work() {
    let mut v = Vec::new();
    for i in 0..100_000u64 {
        v.push(i);
    }
    assert_eq!(v.iter().sum::<u64>(), 100_000 * 99_999 / 2);
    let s: Vec<String> = (0..10_000).map(|i| format!("item {i}")).collect();
    assert_eq!(s[9_999], "item 9999");
    let big = vec![7u8; 10 << 20];
    assert!(big.iter().all(|&b| b == 7));
    let st = vmarena::stats();
    println!("{st}");
    assert!(st.allocations > 10_000);
}
