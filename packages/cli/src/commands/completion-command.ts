import type { CliIo } from '../cli-io.js';
import { UsageError } from '../flags/usage-error.js';

export const COMPLETION_USAGE = `Usage:  kiln completion SHELL

Print a shell completion script (bash, zsh or fish)

  bash:  source <(kiln completion bash)          (or save it under /etc/bash_completion.d/kiln)
  zsh:   source <(kiln completion zsh)           (or save it as _kiln in a directory of $fpath)
  fish:  kiln completion fish > ~/.config/fish/completions/kiln.fish

Commands:
  bash        Print the bash completion script
  fish        Print the fish completion script
  zsh         Print the zsh completion script

Options:
  -h, --help   Print usage
`;

/** A command as its help text describes it: subcommands and flags come from the usage, so completion offers what --help shows. */
export interface HelpNode {
  name: string;
  summary: string;
  usage: string;
  children: HelpNode[];
}

interface FlagWord {
  long: string;
  short?: string;
  description: string;
}

/** The words listed under `Commands:` in a usage text, with their one-line summaries. */
export function commandsOf(usage: string): { name: string; summary: string }[] {
  return sectionLines(usage, 'Commands:').flatMap((l) => {
    const m = /^ {2}([a-z][\w-]*)(?:\s.*?)?(?:\s{2,}(\S.*))?$/.exec(l);
    return m ? [{ name: m[1]!, summary: (m[2] ?? '').trim() }] : [];
  });
}

/** The flags listed under `Options:` (`-f, --file string   Name of ...`; several long flags may share a line). */
export function flagsOf(usage: string): FlagWord[] {
  const out: FlagWord[] = [];
  for (const line of sectionLines(usage, 'Options:')) {
    const head = /^\s+((?:-\w, )?--[a-z][\w-]*(?:,? --[a-z][\w-]*)*)(.*)$/.exec(line);
    if (!head) continue;
    const short = /^-(\w), /.exec(head[1]!)?.[1];
    const description = (/\s{2,}(\S.*)$/.exec(head[2]!)?.[1] ?? '').trim();
    for (const m of head[1]!.matchAll(/--([a-z][\w-]*)/g)) {
      out.push({ long: m[1]!, ...(short && out.every((f) => f.short !== short) ? { short } : {}), description });
    }
  }
  return out;
}

function sectionLines(usage: string, title: string): string[] {
  const lines = usage.split('\n');
  const start = lines.findIndex((l) => l.trim() === title);
  if (start < 0) return [];
  const out: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (l.trim() === '' || /^\S/.test(l)) break;
    out.push(l);
  }
  return out;
}

/**
 * The command tree for completion: the root usage's commands, each with its
 * own usage (from `usages`) and, where that usage lists commands, one level
 * of subcommands (usages from `subUsages["cmd sub"]` when known).
 */
export function helpTree(rootUsage: string, usages: Readonly<Record<string, string>>, subUsages: Readonly<Record<string, string>>): HelpNode {
  const node = (name: string, summary: string, usage: string, path: string, depth: number): HelpNode => ({
    name,
    summary,
    usage,
    children: depth > 1 ? [] : commandsOf(usage).map((c) => node(c.name, c.summary, subUsages[`${path} ${c.name}`.trim()] ?? '', `${path} ${c.name}`.trim(), depth + 1)),
  });
  const root = node('kiln', '', rootUsage, '', 0);
  for (const c of root.children) if (c.usage === '') Object.assign(c, node(c.name, c.summary, usages[c.name] ?? '', c.name, 1));
  return root;
}

const words = (xs: readonly string[]) => xs.join(' ');
const flagWords = (n: HelpNode) => flagsOf(n.usage).flatMap((f) => [`--${f.long}`, ...(f.short ? [`-${f.short}`] : [])]);
/** Each command path ("", "build", "history ls") with its node. */
function paths(root: HelpNode): [string, HelpNode][] {
  const out: [string, HelpNode][] = [['', root]];
  for (const c of root.children) {
    out.push([c.name, c]);
    for (const s of c.children) out.push([`${c.name} ${s.name}`, s]);
  }
  return out;
}
const withSubcommands = (root: HelpNode) => root.children.filter((c) => c.children.length > 0).map((c) => c.name);
const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export function bashScript(root: HelpNode): string {
  const cases = paths(root)
    .map(([p, n]) => `    ${shellQuote(p)}) cmds=${shellQuote(words(n.children.map((c) => c.name)))}; flags=${shellQuote(words(flagWords(n)))}; leaf=${n.children.length === 0 && p !== '' ? 1 : 0} ;;`)
    .join('\n');
  return `# bash completion for kiln (kiln completion bash)
_kiln() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" cmdpath="" word i cmds="" flags="" leaf=0
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i]}"
    [[ "$word" == -* ]] && continue
    case "$cmdpath" in
      '') cmdpath="$word" ;;
      ${withSubcommands(root).map(shellQuote).join('|') || "''"}) cmdpath="$cmdpath $word" ;;
    esac
  done
  case "$cmdpath" in
${cases}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif [[ $leaf == 1 ]]; then
    # Arguments of a command without subcommands are paths (contexts, Dockerfiles): readline's default.
    COMPREPLY=()
  else
    COMPREPLY=($(compgen -W "$cmds" -- "$cur"))
  fi
}
complete -o default -F _kiln kiln
`;
}

export function zshScript(root: HelpNode): string {
  const cases = paths(root)
    .map(([p, n]) => {
      const cmds = n.children.map((c) => shellQuote(`${c.name}:${c.summary.replace(/:/g, '\\:')}`));
      const flags = [...flagWords(n)].map(shellQuote);
      return `    ${shellQuote(p)}) cmds=(${cmds.join(' ')}); flags=(${flags.join(' ')}); leaf=${n.children.length === 0 && p !== '' ? 1 : 0} ;;`;
    })
    .join('\n');
  return `#compdef kiln
# zsh completion for kiln (kiln completion zsh)
_kiln() {
  local cmdpath="" word i leaf=0
  local -a cmds flags
  for ((i = 2; i < CURRENT; i++)); do
    word="\${words[i]}"
    [[ "$word" == -* ]] && continue
    case "$cmdpath" in
      '') cmdpath="$word" ;;
      ${withSubcommands(root).map(shellQuote).join('|') || "''"}) cmdpath="$cmdpath $word" ;;
    esac
  done
  case "$cmdpath" in
${cases}
  esac
  if [[ "\${words[CURRENT]}" == -* ]]; then
    compadd -- "\${flags[@]}"
  elif (( leaf )); then
    _files
  else
    _describe -t commands 'kiln command' cmds
  fi
}
if [[ "\${funcstack[1]}" == _kiln ]]; then _kiln "$@"; else compdef _kiln kiln; fi
`;
}

export function fishScript(root: HelpNode): string {
  const lines = ['# fish completion for kiln (kiln completion fish)', 'complete -c kiln -f'];
  const top = root.children.map((c) => c.name).join(' ');
  lines.push(`complete -c kiln -n "not __fish_seen_subcommand_from ${top}" -l version -d 'Print the version'`);
  for (const c of root.children) {
    lines.push(`complete -c kiln -n "not __fish_seen_subcommand_from ${top}" -a ${c.name} -d ${shellQuote(c.summary)}`);
    const subs = c.children.map((s) => s.name).join(' ');
    const inCmd = `__fish_seen_subcommand_from ${c.name}`;
    for (const s of c.children) {
      lines.push(`complete -c kiln -n "${inCmd}; and not __fish_seen_subcommand_from ${subs}" -a ${s.name} -d ${shellQuote(s.summary)}`);
      for (const f of flagsOf(s.usage)) lines.push(fishFlag(`${inCmd}; and __fish_seen_subcommand_from ${s.name}`, f));
    }
    for (const f of flagsOf(c.usage)) lines.push(fishFlag(c.children.length > 0 ? `${inCmd}; and not __fish_seen_subcommand_from ${subs}` : inCmd, f));
    // Commands taking paths (build CONTEXT, -f FILE) complete files.
    if (c.children.length === 0) lines.push(`complete -c kiln -n "${inCmd}" -F`);
  }
  return `${lines.join('\n')}\n`;
}

function fishFlag(condition: string, f: FlagWord): string {
  return `complete -c kiln -n "${condition}" -l ${f.long}${f.short ? ` -s ${f.short}` : ''}${f.description ? ` -d ${shellQuote(f.description)}` : ''}`;
}

/** `kiln completion bash|zsh|fish`: prints the script for the tree built from the commands' usages. */
export function runCompletion(argv: readonly string[], io: CliIo, tree: () => HelpNode): number {
  const [shell, ...rest] = argv;
  if (shell === '--help' || shell === '-h') {
    io.stdout.write(COMPLETION_USAGE);
    return 0;
  }
  if (shell === undefined) throw new UsageError('"kiln completion" requires exactly 1 argument: bash, zsh or fish', 'SHELL');
  if (rest.length > 0) throw new UsageError(`"kiln completion" accepts 1 argument, got "${rest[0]}"`, 'SHELL');
  const make = { bash: bashScript, zsh: zshScript, fish: fishScript }[shell];
  if (!make) throw new UsageError(`unsupported shell "${shell}" for "kiln completion" (want bash, zsh or fish)`, 'SHELL');
  io.stdout.write(make(tree()));
  return 0;
}
