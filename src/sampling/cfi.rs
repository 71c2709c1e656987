//! Reading x86-64 call-frame information (`.eh_frame`, DWARF's CFI): for an address of code,
//! how to find its frame's caller, the rule that the system unwinder would follow there, in
//! the few forms that compilers emit for ordinary frames. The stack walk (`stack`) follows
//! these rules itself, from a cache (`rules`), and leaves everything else to the unwinder.
//!
//! The frame description entry comes from libgcc's `_Unwind_Find_FDE` (the same lookup the
//! unwinder does: objects the dynamic loader knows, and frames a JIT registered); this module
//! decodes the entry and its common information entry, and runs their programs up to the
//! address, keeping track of the three registers a walk needs: the canonical frame address
//! (CFA: the stack pointer before the call), the frame pointer `rbp` (which a caller's CFA may
//! be computed from) and the return address.
//!
//! Layer: `sampling`; calls the system unwinder's FDE lookup only.

use core::ffi::c_void;

/// How to go from a frame (its `rsp` and `rbp` at an address of its code) to its caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The CFA is `rbp` (else `rsp`) plus `cfa_offset`; the return address lies just below
    /// it; `rbp` was saved at `CFA - 8 * rbp_slot` (0: not saved, the caller's is the same).
    Frame {
        cfa_from_rbp: bool,
        cfa_offset: u32,
        rbp_slot: u32,
    },
    /// The frame has no caller (its return address is undefined: a thread's first frame).
    End,
    /// A rule this walker does not follow (a signal frame, a DWARF expression, a register
    /// other than `rsp` or `rbp` for the CFA): the system unwinder walks this stack.
    Unsupported,
}

/// DWARF register numbers on x86-64.
const RBP: u64 = 6;
const RSP: u64 = 7;
const RETURN_ADDRESS: u64 = 16;

#[repr(C)]
struct EhBases {
    text: *mut c_void,
    data: *mut c_void,
    function: *mut c_void,
}

#[link(name = "gcc_s")]
unsafe extern "C" {
    fn _Unwind_Find_FDE(pc: *mut c_void, bases: *mut EhBases) -> *const u8;
}

/// The rule at `pc` (an address inside a function: for a return address, the address before
/// it, the call); `None` if no unwind information covers `pc` (the unwinder ends a walk there).
pub(crate) fn rule_at(pc: usize) -> Option<Rule> {
    let (fde, function) = find_fde(pc)?;
    // SAFETY: the unwinder returns an entry of loaded unwind information, which stays mapped
    // while the code it describes may run (and `pc`'s code is running, or on a live stack);
    // every read stays inside the entry's and its CIE's stated lengths.
    Some(unsafe { decode(fde, function, pc) }.unwrap_or(Rule::Unsupported))
}

/// The length of the function that starts at `function` (0 if no unwind information starts
/// there).
pub(crate) fn function_length(function: usize) -> usize {
    match find_fde(function) {
        Some((fde, start)) if start == function => {
            // SAFETY: as in `rule_at`.
            unsafe { Fde::read(fde) }.map_or(0, |fde| fde.range as usize)
        }
        _ => 0,
    }
}

/// The frame description entry that covers `pc`, and the first address of its function (the
/// system unwinder's own lookup).
fn find_fde(pc: usize) -> Option<(*const u8, usize)> {
    let mut bases = EhBases {
        text: core::ptr::null_mut(),
        data: core::ptr::null_mut(),
        function: core::ptr::null_mut(),
    };
    // SAFETY: any address may be looked up; `bases` is a valid out-pointer.
    let fde = unsafe { _Unwind_Find_FDE(pc as *mut c_void, &mut bases) };
    (!fde.is_null()).then_some((fde, bases.function as usize))
}

/// The body of the CIE or FDE at `at`: from after its length field to its end; `None` for the
/// terminator and for 64-bit DWARF (not emitted in `.eh_frame`).
///
/// # Safety
/// `at` points to an entry of loaded unwind information.
unsafe fn entry_body(at: *const u8) -> Option<Reader> {
    // SAFETY: an entry starts with its 4-byte length, which bounds the rest (the caller's
    // contract).
    unsafe {
        let length = (at as *const u32).read_unaligned();
        if length == 0 || length == u32::MAX {
            return None;
        }
        Some(Reader {
            at: at.add(4),
            end: at.add(4 + length as usize),
        })
    }
}

/// The parts of a frame description entry the rules need.
struct Fde {
    cie: Cie,
    /// The length of the function's code.
    range: u64,
    /// The entry's CFA program.
    program: Reader,
}

impl Fde {
    /// # Safety
    /// `fde` points to a frame description entry of loaded unwind information.
    unsafe fn read(fde: *const u8) -> Option<Fde> {
        // SAFETY: the caller's contract; reads inside the entry and its CIE, each bounded by
        // its length (the CIE pointer counts back from its own field).
        unsafe {
            let mut program = entry_body(fde)?;
            let cie_delta = program.u32()?;
            let cie = Cie::read(fde.add(4).sub(cie_delta as usize))?;
            program.skip_pointer(cie.fde_encoding)?; // the function's start: the lookup has it
            let range = program.pointer_value(cie.fde_encoding & 0x0f)?;
            if cie.augmented {
                let length = program.uleb()?;
                program.skip(length as usize)?;
            }
            Some(Fde {
                cie,
                range,
                program,
            })
        }
    }
}

/// The rule at `pc` from the frame description entry `fde` of the function at `function`
/// (`None` where the entry takes a form not read here).
///
/// # Safety
/// `fde` points to a frame description entry of loaded unwind information.
unsafe fn decode(fde: *const u8, function: usize, pc: usize) -> Option<Rule> {
    // SAFETY: the caller's contract.
    let fde = unsafe { Fde::read(fde) }?;
    if pc.wrapping_sub(function) >= fde.range as usize {
        return None;
    }
    let mut state = State::at_entry();
    let mut program = Program {
        cie: &fde.cie,
        location: function,
        target: pc,
        saved: [State::at_entry(); 4],
        depth: 0,
    };
    program.run(&mut state, fde.cie.initial, None)?;
    let initial = state;
    program.run(&mut state, fde.program, Some(&initial))?;
    state.rule()
}

/// The parts of a common information entry the rules need.
struct Cie {
    code_alignment: u64,
    data_alignment: i64,
    fde_encoding: u8,
    /// The entry has an augmentation ('z'): FDEs carry augmentation data to skip.
    augmented: bool,
    initial: Reader,
}

impl Cie {
    /// # Safety
    /// `at` points to a common information entry of loaded unwind information.
    unsafe fn read(at: *const u8) -> Option<Cie> {
        // SAFETY: reads bounded by the entry's length.
        unsafe {
            let mut r = entry_body(at)?;
            if r.u32()? != 0 {
                return None; // an FDE, not a CIE
            }
            let version = r.u8()?;
            if version != 1 && version != 3 {
                return None;
            }
            let augmentation = r.at;
            let mut augmentation_len = 0;
            while r.u8()? != 0 {
                augmentation_len += 1;
            }
            let augmentation = core::slice::from_raw_parts(augmentation, augmentation_len);
            let code_alignment = r.uleb()?;
            let data_alignment = r.sleb()?;
            let return_register = if version == 1 {
                u64::from(r.u8()?)
            } else {
                r.uleb()?
            };
            if return_register != RETURN_ADDRESS {
                return None;
            }
            let mut fde_encoding = 0; // absolute, 8 bytes
            let augmented = augmentation.first() == Some(&b'z');
            if augmented {
                let length = r.uleb()? as usize;
                let mut data = r;
                data.skip(length)?; // inside the entry
                let data_end = data.at;
                for &c in &augmentation[1..] {
                    match c {
                        b'R' => fde_encoding = r.u8()?,
                        b'P' => {
                            let encoding = r.u8()?;
                            r.skip_pointer(encoding)?;
                        }
                        b'L' => {
                            r.u8()?;
                        }
                        _ => return None, // 'S' (a signal frame) and the rest
                    }
                }
                if r.at > data_end {
                    return None;
                }
                r.at = data_end;
            } else if !augmentation.is_empty() {
                return None;
            }
            Some(Cie {
                code_alignment,
                data_alignment,
                fde_encoding,
                augmented,
                initial: r,
            })
        }
    }
}

/// Where a register's value at the caller is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Saved {
    /// Unchanged by this frame.
    Same,
    /// Not recoverable.
    Undefined,
    /// At the CFA plus this offset.
    At(i64),
    /// Somewhere this walker does not look (another register, an expression).
    Elsewhere,
}

/// A row of the CFI table, for the registers a walk needs.
#[derive(Clone, Copy)]
struct State {
    /// `None`: the CFA is computed some way not followed here.
    cfa_register: Option<u64>,
    cfa_offset: i64,
    rbp: Saved,
    /// Anything but `Same` (the CFA) is a rule this walker does not follow.
    rsp: Saved,
    return_address: Saved,
}

impl State {
    const fn at_entry() -> State {
        State {
            cfa_register: None,
            cfa_offset: 0,
            rbp: Saved::Same,
            rsp: Saved::Same,
            return_address: Saved::Same,
        }
    }

    fn rule(&self) -> Option<Rule> {
        if self.rsp != Saved::Same {
            return None; // the caller's stack pointer is not the CFA
        }
        if self.return_address == Saved::Undefined {
            return Some(Rule::End);
        }
        let cfa_from_rbp = match self.cfa_register? {
            RSP => false,
            RBP => true,
            _ => return None,
        };
        if self.return_address != Saved::At(-8) || self.cfa_offset <= 0 {
            return None;
        }
        let rbp_slot = match self.rbp {
            Saved::Same => 0,
            Saved::At(offset) if offset < 0 && offset % 8 == 0 => {
                u32::try_from(offset.checked_neg()? / 8).ok()?
            }
            _ => return None,
        };
        Some(Rule::Frame {
            cfa_from_rbp,
            cfa_offset: u32::try_from(self.cfa_offset).ok()?,
            rbp_slot,
        })
    }

    fn set(&mut self, register: u64, saved: Saved) {
        match register {
            RBP => self.rbp = saved,
            RSP => self.rsp = saved,
            RETURN_ADDRESS => self.return_address = saved,
            _ => {}
        }
    }
}

/// A CFA program run up to `target`.
struct Program<'a> {
    cie: &'a Cie,
    location: usize,
    target: usize,
    /// `DW_CFA_remember_state`'s stack.
    saved: [State; 4],
    depth: usize,
}

impl Program<'_> {
    /// Runs `code` on `state` until the row that covers `target` is complete. `initial` is the
    /// state after the CIE's program (for `DW_CFA_restore`; `None` while running that one).
    fn run(&mut self, state: &mut State, mut code: Reader, initial: Option<&State>) -> Option<()> {
        let data = self.cie.data_alignment;
        while code.at < code.end {
            let op = code.u8()?;
            let low = u64::from(op & 0x3f);
            match op >> 6 {
                1 => {
                    if self.advance(low) {
                        return Some(());
                    }
                    continue;
                }
                2 => {
                    let offset = (code.uleb()? as i64).wrapping_mul(data);
                    state.set(low, Saved::At(offset));
                    continue;
                }
                3 => {
                    state.set(low, restored(initial?, low));
                    continue;
                }
                _ => {}
            }
            match op {
                0x00 => {} // nop
                0x02 => {
                    let delta = u64::from(code.u8()?);
                    if self.advance(delta) {
                        return Some(());
                    }
                }
                0x03 => {
                    let delta = u64::from(code.u16()?);
                    if self.advance(delta) {
                        return Some(());
                    }
                }
                0x04 => {
                    let delta = u64::from(code.u32()?);
                    if self.advance(delta) {
                        return Some(());
                    }
                }
                0x05 => {
                    let register = code.uleb()?;
                    let offset = (code.uleb()? as i64).wrapping_mul(data);
                    state.set(register, Saved::At(offset));
                }
                0x06 => {
                    let register = code.uleb()?;
                    state.set(register, restored(initial?, register));
                }
                0x07 => state.set(code.uleb()?, Saved::Undefined),
                0x08 => state.set(code.uleb()?, Saved::Same),
                0x09 => {
                    let register = code.uleb()?;
                    code.uleb()?;
                    state.set(register, Saved::Elsewhere);
                }
                0x0a => {
                    *self.saved.get_mut(self.depth)? = *state;
                    self.depth += 1;
                }
                0x0b => {
                    // The whole row, CFA included (as libgcc restores it, and as compilers
                    // expect after an epilogue in the middle of a function).
                    self.depth = self.depth.checked_sub(1)?;
                    *state = self.saved[self.depth];
                }
                0x0c => {
                    state.cfa_register = Some(code.uleb()?);
                    state.cfa_offset = code.uleb()? as i64;
                }
                0x0d => state.cfa_register = Some(code.uleb()?),
                0x0e => state.cfa_offset = code.uleb()? as i64,
                0x0f => {
                    let length = code.uleb()?;
                    code.skip(length as usize)?;
                    state.cfa_register = None;
                }
                0x10 | 0x16 => {
                    let register = code.uleb()?;
                    let length = code.uleb()?;
                    code.skip(length as usize)?;
                    state.set(register, Saved::Elsewhere);
                }
                0x11 => {
                    let register = code.uleb()?;
                    let offset = code.sleb()?.wrapping_mul(data);
                    state.set(register, Saved::At(offset));
                }
                0x12 => {
                    state.cfa_register = Some(code.uleb()?);
                    state.cfa_offset = code.sleb()?.wrapping_mul(data);
                }
                0x13 => state.cfa_offset = code.sleb()?.wrapping_mul(data),
                0x14 => {
                    let register = code.uleb()?;
                    code.uleb()?;
                    state.set(register, Saved::Elsewhere);
                }
                0x15 => {
                    let register = code.uleb()?;
                    code.sleb()?;
                    state.set(register, Saved::Elsewhere);
                }
                0x2e => {
                    code.uleb()?; // GNU_args_size: only landing pads need it
                }
                0x2f => {
                    let register = code.uleb()?;
                    let offset = (code.uleb()? as i64).wrapping_neg().wrapping_mul(data);
                    state.set(register, Saved::At(offset));
                }
                _ => return None, // DW_CFA_set_loc and vendor extensions
            }
        }
        Some(())
    }

    /// Moves the location on by `delta` code units; true if the new row begins past the
    /// target (the current row is the target's).
    fn advance(&mut self, delta: u64) -> bool {
        let next = self
            .location
            .wrapping_add(delta.wrapping_mul(self.cie.code_alignment) as usize);
        if next > self.target {
            return true;
        }
        self.location = next;
        false
    }
}

/// `register`'s rule in the state after the CIE's program (`DW_CFA_restore`).
fn restored(initial: &State, register: u64) -> Saved {
    match register {
        RBP => initial.rbp,
        RSP => initial.rsp,
        RETURN_ADDRESS => initial.return_address,
        _ => Saved::Same,
    }
}

/// Reads LEB128 numbers, fixed-size fields and encoded pointers, never past `end`.
#[derive(Clone, Copy)]
struct Reader {
    at: *const u8,
    end: *const u8,
}

impl Reader {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        if (self.end as usize).wrapping_sub(self.at as usize) < N || self.at > self.end {
            return None;
        }
        // SAFETY: `N` bytes before `end`, inside the entry (see `decode`).
        let bytes = unsafe { (self.at as *const [u8; N]).read_unaligned() };
        // SAFETY: still inside the entry, or at its end.
        self.at = unsafe { self.at.add(N) };
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take()?))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        if (self.end as usize).wrapping_sub(self.at as usize) < n || self.at > self.end {
            return None;
        }
        // SAFETY: `n` bytes before `end`.
        self.at = unsafe { self.at.add(n) };
        Some(())
    }

    fn uleb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.u8()?;
            if shift < 64 {
                value |= u64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
    }

    fn sleb(&mut self) -> Option<i64> {
        let mut value = 0i64;
        let mut shift = 0;
        loop {
            let byte = self.u8()?;
            if shift < 64 {
                value |= i64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Some(value);
            }
        }
    }

    /// The raw value of a pointer in `format` (the low four bits of an encoding), without
    /// what it is relative to.
    fn pointer_value(&mut self, format: u8) -> Option<u64> {
        Some(match format {
            0x00 | 0x04 | 0x0c => self.u64()?,
            0x01 => self.uleb()?,
            0x02 | 0x0a => u64::from(self.u16()?),
            0x03 | 0x0b => u64::from(self.u32()?),
            0x09 => self.sleb()? as u64,
            _ => return None,
        })
    }

    /// Skips a pointer in `encoding` (DW_EH_PE_omit: none).
    fn skip_pointer(&mut self, encoding: u8) -> Option<()> {
        if encoding == 0xff {
            return Some(());
        }
        if encoding & 0x70 == 0x50 {
            return None; // aligned: not emitted on x86-64
        }
        self.pointer_value(encoding & 0x0f).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn here() -> usize {
        let pc: usize;
        // SAFETY: reads the instruction pointer into a register; touches nothing else.
        unsafe { core::arch::asm!("lea {}, [rip]", out(reg) pc, options(nomem, nostack)) };
        core::hint::black_box(pc)
    }

    #[test]
    fn a_plain_function_has_a_frame_rule() {
        let pc = here();
        let rule = rule_at(pc).expect("unwind information for our own code");
        let (_, function) = find_fde(pc).unwrap();
        assert!(
            function <= pc && pc - function < 4096,
            "{function:#x} {pc:#x}"
        );
        match rule {
            Rule::Frame { cfa_offset, .. } => assert!(cfa_offset >= 8 && cfa_offset % 8 == 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_address_without_unwind_information_has_no_rule() {
        assert_eq!(rule_at(8), None);
    }

    /// A CIE with `augmentation` and the usual x86-64 initial rules (CFA = rsp + 8, return
    /// address at CFA - 8), then an FDE with `program` for a function of 0x100 bytes; returns
    /// the bytes and the FDE's offset in them.
    fn entries(augmentation: &[u8], program: &[u8]) -> (Vec<u8>, usize) {
        let mut cie = vec![0, 0, 0, 0, 1]; // id 0, version 1
        cie.extend_from_slice(augmentation);
        cie.extend_from_slice(&[0, 1, 0x78, 16]); // code 1, data -8, return address r16
        if augmentation.first() == Some(&b'z') {
            cie.extend_from_slice(&[1, 0x1b]); // 'R': pc-relative 4-byte pointers
        }
        cie.extend_from_slice(&[0x0c, 7, 8, 0x90, 1]);
        let mut bytes = (cie.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&cie);
        let fde_at = bytes.len();
        let mut fde = ((fde_at + 4) as u32).to_le_bytes().to_vec(); // back to the CIE
        if augmentation.first() == Some(&b'z') {
            fde.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0]); // start, 0x100 bytes, no data
        } else {
            fde.extend_from_slice(&[0; 8]); // absolute 8-byte pointers
            fde.extend_from_slice(&0x100u64.to_le_bytes());
        }
        fde.extend_from_slice(program);
        bytes.extend_from_slice(&(fde.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&fde);
        (bytes, fde_at)
    }

    fn rule_in(entries: &(Vec<u8>, usize), offset: usize) -> Option<Rule> {
        let function = 0x40_0000;
        // SAFETY: a CIE and an FDE built above, alive for the call.
        unsafe {
            decode(
                entries.0.as_ptr().add(entries.1),
                function,
                function + offset,
            )
        }
    }

    fn frame(cfa_from_rbp: bool, cfa_offset: u32, rbp_slot: u32) -> Option<Rule> {
        Some(Rule::Frame {
            cfa_from_rbp,
            cfa_offset,
            rbp_slot,
        })
    }

    #[test]
    fn the_program_runs_to_the_row_of_the_address() {
        let program = [
            0x41, 0x0e, 16, 0x86, 2, // push rbp: CFA = rsp + 16, rbp at CFA - 16
            0x43, 0x0d, 6, // mov rbp, rsp: CFA = rbp + 16
            0x60, 0x0a, 0x0c, 7, 8,
            0xc6, // an epilogue: remember, CFA = rsp + 8, rbp restored
            0x41, 0x0b, // after its ret: the remembered row again, CFA included
        ];
        let entries = entries(b"zR", &program);
        assert_eq!(rule_in(&entries, 0), frame(false, 8, 0));
        assert_eq!(rule_in(&entries, 1), frame(false, 16, 2));
        assert_eq!(rule_in(&entries, 3), frame(false, 16, 2));
        assert_eq!(rule_in(&entries, 4), frame(true, 16, 2));
        assert_eq!(rule_in(&entries, 0x23), frame(true, 16, 2));
        assert_eq!(rule_in(&entries, 0x24), frame(false, 8, 0));
        assert_eq!(rule_in(&entries, 0x25), frame(true, 16, 2));
        assert_eq!(rule_in(&entries, 0xff), frame(true, 16, 2));
        assert_eq!(rule_in(&entries, 0x100), None, "past the function");
    }

    #[test]
    fn rules_the_walk_does_not_follow_are_said_so() {
        let undefined_return = entries(b"zR", &[0x07, 16]);
        assert_eq!(rule_in(&undefined_return, 0), Some(Rule::End));
        let cfa_from_rbx = entries(b"zR", &[0x0d, 3]);
        assert_eq!(rule_in(&cfa_from_rbx, 0), None);
        let cfa_expression = entries(b"zR", &[0x0f, 1, 0x77]);
        assert_eq!(rule_in(&cfa_expression, 0), None);
        let rbp_elsewhere = entries(b"zR", &[0x09, 6, 3]);
        assert_eq!(rule_in(&rbp_elsewhere, 0), None);
        let rsp_saved = entries(b"zR", &[0x87, 2]);
        assert_eq!(rule_in(&rsp_saved, 0), None);
        let signal_frame = entries(b"zRS", &[]);
        assert_eq!(rule_in(&signal_frame, 0), None);
        let unaugmented = entries(b"", &[0x41, 0x0e, 16]);
        assert_eq!(rule_in(&unaugmented, 1), frame(false, 16, 0));
    }

    #[test]
    fn leb128_numbers_decode() {
        let bytes = [0xe5, 0x8e, 0x26, 0x7f, 0x80, 0x7f];
        let mut r = Reader {
            at: bytes.as_ptr(),
            // SAFETY: one past the end of `bytes`.
            end: unsafe { bytes.as_ptr().add(bytes.len()) },
        };
        assert_eq!(r.uleb(), Some(624_485));
        assert_eq!(r.sleb(), Some(-1));
        assert_eq!(r.sleb(), Some(-128));
        assert_eq!(r.u8(), None, "never past the end");
    }
}
