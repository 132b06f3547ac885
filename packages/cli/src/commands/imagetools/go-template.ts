import { UsageError } from '../../flags/usage-error.js';

/**
 * The part of Go's text/template that `--format` values of buildx use:
 * text with `{{ ... }}` actions (`{{-`/`-}}` trim spaces), each a pipeline
 * of a field path (`.`, `.Manifest.Digest`), a string literal, or a call of
 * `json X` (indented JSON, as buildx's `json`) or `index X KEY...`, with
 * parentheses for nesting. Anything else is a UsageError naming --format.
 */
export function renderGoTemplate(template: string, data: unknown, flag = '--format'): string {
  let out = '';
  let i = 0;
  while (i < template.length) {
    const open = template.indexOf('{{', i);
    if (open < 0) {
      out += template.slice(i);
      break;
    }
    let text = template.slice(i, open);
    let start = open + 2;
    if (template[start] === '-' && /\s/.test(template[start + 1] ?? '')) {
      text = text.replace(/\s+$/, '');
      start++;
    }
    out += text;
    const close = template.indexOf('}}', start);
    if (close < 0) throw new UsageError(`invalid ${flag} template: unclosed action at offset ${open}`, flag);
    let body = template.slice(start, close);
    i = close + 2;
    if (/\s-$/.test(body)) {
      body = body.slice(0, -1);
      const m = /^\s*/.exec(template.slice(i))!;
      i += m[0].length;
    }
    const value = evaluate(tokenize(body, flag), data, flag);
    out += typeof value === 'string' ? value : value === undefined || value === null ? '<no value>' : typeof value === 'object' ? JSON.stringify(value) : String(value);
  }
  return out;
}

type Token = { kind: 'path'; path: string[] } | { kind: 'string'; value: string } | { kind: 'ident'; name: string } | { kind: 'open' } | { kind: 'close' };

function tokenize(body: string, flag: string): Token[] {
  const tokens: Token[] = [];
  const re = /\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|(\.[\w.]*)|([A-Za-z_]\w*))/y;
  let pos = 0;
  while (pos < body.length) {
    if (/^\s*$/.test(body.slice(pos))) break;
    re.lastIndex = pos;
    const m = re.exec(body);
    if (!m) throw new UsageError(`invalid ${flag} template: cannot read "${body.slice(pos).trim()}"`, flag);
    pos = re.lastIndex;
    if (m[1]) tokens.push({ kind: 'open' });
    else if (m[2]) tokens.push({ kind: 'close' });
    else if (m[3] !== undefined) tokens.push({ kind: 'string', value: JSON.parse(`"${m[3]}"`) as string });
    else if (m[4] !== undefined) tokens.push({ kind: 'path', path: m[4].split('.').filter(Boolean) });
    else tokens.push({ kind: 'ident', name: m[5]! });
  }
  return tokens;
}

function evaluate(tokens: Token[], data: unknown, flag: string): unknown {
  let pos = 0;
  const operand = (): unknown => {
    const t = tokens[pos++];
    if (!t) throw new UsageError(`invalid ${flag} template: missing value`, flag);
    if (t.kind === 'path') return t.path.reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), data);
    if (t.kind === 'string') return t.value;
    if (t.kind === 'open') {
      const v = call();
      if (tokens[pos++]?.kind !== 'close') throw new UsageError(`invalid ${flag} template: unclosed "("`, flag);
      return v;
    }
    if (t.kind === 'ident') {
      pos--;
      return call();
    }
    throw new UsageError(`invalid ${flag} template: unexpected ")"`, flag);
  };
  const call = (): unknown => {
    const t = tokens[pos];
    if (t?.kind !== 'ident') return operand();
    pos++;
    const args: unknown[] = [];
    while (pos < tokens.length && tokens[pos]!.kind !== 'close') args.push(operand());
    switch (t.name) {
      case 'json':
        if (args.length !== 1) throw new UsageError(`invalid ${flag} template: json takes 1 argument`, flag);
        return JSON.stringify(args[0] ?? null, null, 2);
      case 'index':
        return args.slice(1).reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[String(k)] : undefined), args[0]);
      default:
        throw new UsageError(`invalid ${flag} template: function "${t.name}" not defined (json and index are)`, flag);
    }
  };
  const v = call();
  if (pos !== tokens.length) throw new UsageError(`invalid ${flag} template: unexpected input after the value`, flag);
  return v;
}
