import { UsageError } from './usage-error.js';

/**
 * Splits one CSV record the way buildx does (Go's encoding/csv): fields are
 * comma separated, a field may be double-quoted, and `""` inside quotes is a
 * literal quote. `flag` names the flag for errors.
 */
export function parseCsv(value: string, flag: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = '';
    if (value[i] === '"') {
      i++;
      for (;;) {
        if (i >= value.length) throw new UsageError(`invalid value "${value}" for ${flag}: unterminated quote`, flag);
        const c = value[i]!;
        if (c === '"') {
          if (value[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += c;
        i++;
      }
      if (i < value.length && value[i] !== ',') {
        throw new UsageError(`invalid value "${value}" for ${flag}: extraneous text after quoted field`, flag);
      }
    } else {
      const end = value.indexOf(',', i);
      field = end < 0 ? value.slice(i) : value.slice(i, end);
      if (field.includes('"')) throw new UsageError(`invalid value "${value}" for ${flag}: bare " in unquoted field`, flag);
      i = end < 0 ? value.length : end;
    }
    fields.push(field);
    if (i >= value.length) return fields;
    i++; // the comma
  }
}

/**
 * Parses `k=v,k2=v2` into ordered pairs; keys are lower-cased as buildx does.
 * A field without `=` is a usage error naming `flag`; a repeated key keeps
 * the last value, as buildx does.
 */
export function parseCsvPairs(value: string, flag: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const field of parseCsv(value, flag)) {
    const eq = field.indexOf('=');
    if (eq <= 0) throw new UsageError(`invalid value "${value}" for ${flag}: field "${field}" must be a key=value pair`, flag);
    const key = field.slice(0, eq).trim().toLowerCase();
    out.set(key, field.slice(eq + 1));
  }
  return out;
}
