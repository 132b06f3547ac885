/**
 * Byte-faithful text handling. Go treats a Dockerfile as bytes; we work on JS
 * strings. Valid UTF-8 decodes normally; each byte of an invalid sequence
 * becomes a lone surrogate U+DC80..U+DCFF (the "surrogateescape" scheme), which
 * `goQuote` prints as `\xNN` and `encodeDockerfileText` turns back into the
 * original byte, so nothing is lost or silently replaced.
 */

const RAW_BYTE_BASE = 0xdc00;

/** Decodes Dockerfile bytes as UTF-8, keeping invalid bytes as U+DC80..U+DCFF. */
export function decodeDockerfile(bytes: Uint8Array): string {
  let out = '';
  let chunk: number[] = [];
  const flush = () => {
    if (chunk.length) {
      out += String.fromCodePoint(...chunk);
      chunk = [];
    }
  };
  const n = bytes.length;
  for (let i = 0; i < n; ) {
    const b0 = bytes[i]!;
    if (b0 < 0x80) {
      chunk.push(b0);
      i++;
    } else {
      let cp = -1;
      let len = 0;
      if (b0 >= 0xc2 && b0 <= 0xdf) {
        len = 2;
        cp = b0 & 0x1f;
      } else if (b0 >= 0xe0 && b0 <= 0xef) {
        len = 3;
        cp = b0 & 0x0f;
      } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        len = 4;
        cp = b0 & 0x07;
      }
      if (len > 0 && i + len <= n) {
        for (let k = 1; k < len; k++) {
          const b = bytes[i + k]!;
          if ((b & 0xc0) !== 0x80) {
            cp = -1;
            break;
          }
          cp = (cp << 6) | (b & 0x3f);
        }
        // Reject overlong forms, surrogates and values past U+10FFFF, as Go does.
        const min = len === 2 ? 0x80 : len === 3 ? 0x800 : 0x10000;
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) cp = -1;
      } else {
        cp = -1;
      }
      if (cp >= 0) {
        chunk.push(cp);
        i += len;
      } else {
        chunk.push(RAW_BYTE_BASE + b0);
        i++;
      }
    }
    if (chunk.length >= 4096) flush();
  }
  flush();
  return out;
}

/** Encodes text back to bytes: UTF-8, with U+DC80..U+DCFF restored to the raw bytes they stand for. */
export function encodeDockerfileText(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0xdc80 && cp <= 0xdcff) out.push(cp - RAW_BYTE_BASE);
    else if (cp < 0x80) out.push(cp);
    else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
    else if (cp < 0x10000) {
      const c = cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp;
      out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    } else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  }
  return Uint8Array.from(out);
}

const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

/** Go's `strconv.Quote`: a double-quoted string with Go escapes (`\xNN` for raw bytes). */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    switch (ch) {
      case '"':
        out += '\\"';
        continue;
      case '\\':
        out += '\\\\';
        continue;
      case '\x07':
        out += '\\a';
        continue;
      case '\b':
        out += '\\b';
        continue;
      case '\f':
        out += '\\f';
        continue;
      case '\n':
        out += '\\n';
        continue;
      case '\r':
        out += '\\r';
        continue;
      case '\t':
        out += '\\t';
        continue;
      case '\v':
        out += '\\v';
        continue;
    }
    if (cp === 0x20 || (cp > 0x20 && cp < 0x7f)) out += ch;
    else if (cp < 0x20 || cp === 0x7f) out += `\\x${hex(cp, 2)}`;
    else if (cp >= 0xdc80 && cp <= 0xdcff) out += `\\x${hex(cp - RAW_BYTE_BASE, 2)}`;
    else if (cp >= 0xd800 && cp <= 0xdfff) out += '\\ufffd';
    else if (PRINTABLE.test(ch)) out += ch;
    else if (cp < 0x10000) out += `\\u${hex(cp, 4)}`;
    else out += `\\U${hex(cp, 8)}`;
  }
  return out + '"';
}
