//! Function names and source lines for frames: each object's symbol table
//! and DWARF line information (in the object, or in the debug file its
//! debug link or build id names under /usr/lib/debug), demangled.
//! Answers are cached per object and address: a hot call site is
//! symbolized once.

use std::{collections::HashMap, sync::Arc};

use auditor_analyzer::stack::Frame;
use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Source},
};

use super::{objects::Object, unwind::FrameAddr};

/// Cached answers (object address, frame address) past which the cache
/// starts over.
const CACHED: usize = 65536;

pub struct Symbols {
    symbolizer: Symbolizer,
    cache: HashMap<(usize, u64), Arc<[Frame]>>,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            symbolizer: Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                .build(),
            cache: HashMap::new(),
        }
    }
}

impl Symbols {
    /// The frames of one address in `object` (loaded with `bias`): the
    /// function it is in, after the functions inlined into it there.
    pub fn frames(&mut self, object: &Arc<Object>, bias: u64, at: FrameAddr) -> Arc<[Frame]> {
        let key = (Arc::as_ptr(object) as usize, at.address);
        if let Some(f) = self.cache.get(&key) {
            return f.clone();
        }
        let vaddr = at.lookup().wrapping_sub(bias);
        let frames: Arc<[Frame]> = self.lookup(object, vaddr, at.address).into();
        if self.cache.len() >= CACHED {
            self.cache.clear();
        }
        self.cache.insert(key, frames.clone());
        frames
    }

    /// The frame of one address as its object and offset, unnamed.
    pub fn bare(object: &Object, bias: u64, at: FrameAddr) -> Frame {
        Frame {
            address: at.address,
            object: Some(object.name.clone()),
            offset: Some(at.lookup().wrapping_sub(bias)),
            ..Frame::default()
        }
    }

    fn lookup(&self, object: &Object, vaddr: u64, address: u64) -> Vec<Frame> {
        let bare = Frame {
            address,
            object: Some(object.name.clone()),
            offset: Some(vaddr),
            ..Frame::default()
        };
        let src = Source::Elf(Elf::new(&object.open_path));
        let Ok(Symbolized::Sym(sym)) = self
            .symbolizer
            .symbolize_single(&src, Input::VirtOffset(vaddr))
        else {
            return vec![bare];
        };
        let place = |c: Option<&blazesym::symbolize::CodeInfo<'_>>| {
            c.map(|c| (c.to_path().display().to_string(), c.line))
        };
        // Innermost first: each inlined function at its own line, the
        // last one where the address is; the outer function at the line of
        // its first inlined call (the symbolizer has shifted the lines so).
        let mut out = Vec::new();
        for inl in sym.inlined.iter().rev() {
            let (file, line) = place(inl.code_info.as_ref()).unzip();
            out.push(Frame {
                function: Some(inl.name.to_string()),
                file,
                line: line.flatten(),
                inlined: true,
                ..bare.clone()
            });
        }
        let (file, line) = place(sym.code_info.as_deref()).unzip();
        out.push(Frame {
            function: Some(sym.name.to_string()),
            file,
            line: line.flatten(),
            ..bare
        });
        out
    }
}
