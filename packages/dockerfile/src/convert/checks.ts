/**
 * BuildKit's build checks: lint-style warnings with a source location, and
 * the `# check=skip=A,B;error=true` directive (also the BUILDKIT_DOCKERFILE_CHECK
 * build arg) that silences rules or turns the warnings into an error.
 */
import { SourceError } from '@kiln/common';
import { levenshtein } from '../instructions/suggest.js';

export interface BuildWarning {
  /** Rule name, e.g. "FromAsCasing". */
  rule: string;
  /** The rule's short description. */
  description: string;
  /** What is wrong here. */
  message: string;
  file: string;
  /** 1-based. */
  line: number;
  endLine: number;
  url: string;
}

export const CHECK_RULES: Record<string, string> = {
  FromAsCasing: "The 'as' keyword should match the case of the 'from' keyword",
  StageNameCasing: 'Stage names should be lowercase',
  DuplicateStageName: 'Stage names should be unique',
  ReservedStageName: 'Reserved words should not be used as stage names',
  MaintainerDeprecated: 'The MAINTAINER instruction is deprecated, use a label instead to define an image author',
  JSONArgsRecommended: 'JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals',
  ConsistentInstructionCasing: 'All commands within the Dockerfile should use the same casing (either upper or lower)',
  UndefinedVar: 'Variables should be defined before their use',
  UndefinedArgInFrom: 'FROM command must use declared ARGs',
  SecretsUsedInArgOrEnv: 'Sensitive data should not be used in the ARG or ENV commands',
  LegacyKeyValueFormat: 'Legacy key/value format with whitespace separator should not be used',
  WorkdirRelativePath: 'Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes',
  MultipleInstructionsDisallowed: 'Multiple instructions of the same type should not be used in the same stage',
  NoEmptyContinuation: 'Empty continuation lines will become errors in a future release',
  RedundantTargetPlatform: 'Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior',
  FromPlatformFlagConstDisallowed: 'FROM --platform flag should not use a constant value',
  InvalidDefaultArgInFrom: 'Default value for global ARG results in an empty or invalid base image name',
  InvalidBaseImagePlatform: 'Base image platform does not match expected target platform',
  ExposeProtoCasing: 'Protocol in EXPOSE instruction should be lowercase',
  ExposeInvalidFormat: 'IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release',
};

const kebab = (rule: string) => rule.replace(/([a-z0-9])([A-Z])/g, '$1-$2').replace(/([A-Z])([A-Z][a-z])/g, '$1-$2').toLowerCase();

export interface CheckConfig {
  skip: Set<string>;
  skipAll: boolean;
  error: boolean;
}

/**
 * Parses a check directive value ("skip=A,B;error=true") as BuildKit's
 * ParseLintOptions: at most two `;` parts, keys `skip` and `error` only;
 * anything else throws (the caller names where the value came from).
 */
export function parseCheckDirective(value: string | undefined): CheckConfig {
  const cfg: CheckConfig = { skip: new Set(), skipAll: false, error: false };
  const text = (value ?? '').trim();
  if (!text) return cfg;
  const semi = text.indexOf(';');
  const parts = semi < 0 ? [text] : [text.slice(0, semi), text.slice(semi + 1)];
  for (const part of parts) {
    const eq = part.indexOf('=');
    if (eq < 0) throw new Error(`invalid check option ${JSON.stringify(part)}`);
    const key = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (key === 'skip') {
      if (v === 'all') cfg.skipAll = true;
      else for (const r of v.split(',')) cfg.skip.add(r.trim());
    } else if (key === 'error') {
      const b = parseGoBool(v);
      if (b === undefined) throw new Error(`failed to parse check option ${JSON.stringify(part)}: invalid syntax`);
      cfg.error = b;
    } else {
      throw new Error(`invalid check option ${JSON.stringify(key)} (want skip= or error=)`);
    }
  }
  return cfg;
}

/** Go's strconv.ParseBool. */
function parseGoBool(v: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return undefined;
}

/**
 * The `check=` directive among the comments just above an instruction, as
 * BuildKit's WithMergedConfigFromComments: the first one found, its value up
 * to the first space; a value that does not parse is ignored.
 */
export function checkConfigFromComments(comments: readonly string[]): CheckConfig | undefined {
  for (const comment of comments) {
    const m = /^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/.exec(comment);
    if (!m || m[1]!.toLowerCase() !== 'check') continue;
    try {
      return parseCheckDirective(m[2]!.split(' ')[0]);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

export class Linter {
  readonly warnings: BuildWarning[] = [];
  private readonly seen = new Set<string>();
  /** Rules skipped for one instruction (by its first line), from a `# check=skip=` comment above it. */
  private readonly lineConfigs = new Map<number, CheckConfig>();

  constructor(
    private readonly cfg: CheckConfig,
    private readonly file: string,
  ) {}

  /** Adds the skips of a `# check=` comment above the instruction starting at `line`. */
  skipAt(line: number, cfg: CheckConfig): void {
    this.lineConfigs.set(line, cfg);
  }

  report(rule: keyof typeof CHECK_RULES, message: string, line: number, endLine = line): void {
    if (this.cfg.skipAll || this.cfg.skip.has(rule)) return;
    const here = this.lineConfigs.get(line);
    if (here && (here.skipAll || here.skip.has(rule))) return;
    const key = `${rule}\0${message}\0${line}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.warnings.push({
      rule,
      description: CHECK_RULES[rule]!,
      message,
      file: this.file,
      line,
      endLine,
      url: `https://docs.docker.com/go/dockerfile/rule/${kebab(rule)}/`,
    });
  }

  /** With `error=true`, fails on the first warning (all of them listed). */
  finish(): void {
    if (!this.cfg.error || this.warnings.length === 0) return;
    const first = this.warnings[0]!;
    const list = this.warnings.map((w) => `  ${w.file}:${w.line}: ${w.rule}: ${w.message}`).join('\n');
    throw new SourceError(`lint violation found for rules: ${[...new Set(this.warnings.map((w) => w.rule))].join(', ')} (# check=error=true)\n${list}`, first.file, first.line);
  }
}

/**
 * Keys that look like they hold secrets (BuildKit's SecretsUsedInArgOrEnv):
 * a `_`-separated word of the key is a secret word, and none is "public".
 */
export function looksSecret(key: string): boolean {
  const words = key.toLowerCase().split('_');
  const deny = ['apikey', 'auth', 'credential', 'credentials', 'key', 'password', 'pword', 'passwd', 'secret', 'token'];
  if (words.includes('public')) return false;
  return words.some((t) => deny.includes(t));
}

/**
 * BuildKit's suggest.Search: the option nearest to `word` within an edit
 * distance of 2, or undefined (also when `word` is itself an option).
 */
export function suggestName(word: string, options: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDist = 3;
  for (const opt of options) {
    if (opt === word) return undefined;
    const d = levenshtein(word, opt);
    if (d < bestDist) {
      best = opt;
      bestDist = d;
    }
  }
  return best;
}

export function formatWarning(w: BuildWarning): string {
  return `${w.rule}: ${w.message} (line ${w.line})`;
}
