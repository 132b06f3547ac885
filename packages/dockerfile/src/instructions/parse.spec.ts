import { describe, expect, it } from 'vitest';
import { SourceError } from '@kiln/common';
import { parseDockerfile } from '../parser/parser.js';
import { parseGoDuration } from './duration.js';
import { parseInstructions } from './parse.js';
import type { Command, ParsedDockerfile } from './types.js';

function parse(text: string): ParsedDockerfile {
  return parseInstructions(parseDockerfile(text, { filename: 'ctx/Dockerfile' }));
}

function commands(body: string): Command[] {
  return parse(`FROM scratch\n${body}`).stages[0]!.commands;
}

function only<K extends Command['kind']>(body: string, kind: K): Extract<Command, { kind: K }> {
  const cmds = commands(body);
  expect(cmds.length).toBe(1);
  expect(cmds[0]!.kind).toBe(kind);
  return cmds[0] as Extract<Command, { kind: K }>;
}

function errorOf(text: string): SourceError {
  try {
    parse(text);
  } catch (err) {
    expect(err).toBeInstanceOf(SourceError);
    return err as SourceError;
  }
  throw new Error('expected an error');
}

describe('stages', () => {
  it('parses FROM with platform, AS name and meta args', () => {
    const r = parse(
      [
        '# syntax=docker/dockerfile:1',
        'ARG BASE=alpine VERSION',
        'FROM --platform=$BUILDPLATFORM ${BASE}:3 AS Build',
        'RUN make',
        '',
        'FROM build',
        'COPY --from=build /out /out',
      ].join('\n'),
    );
    expect(r.metaArgs.map((a) => a.args)).toEqual([[{ key: 'BASE', value: 'alpine' }, { key: 'VERSION' }]]);
    expect(r.stages.map((s) => [s.name, s.baseName, s.platform, s.line, s.endLine, s.commands.length])).toEqual([
      ['build', '${BASE}:3', '$BUILDPLATFORM', 3, 4, 1],
      ['', 'build', '', 6, 7, 1],
    ]);
    expect(r.stages[0]!.original).toBe('FROM --platform=$BUILDPLATFORM ${BASE}:3 AS Build');
  });

  it('rejects bad FROM usage', () => {
    expect(errorOf('FROM a AS 1abc').message).toMatch(/invalid name for build stage: "1abc"/);
    expect(errorOf('FROM a b').message).toBe('FROM requires either one or three arguments');
    expect(errorOf('FROM').message).toBe('FROM requires either one or three arguments');
    const e = errorOf('FROM a\nFROM --plat=x b');
    expect(e.message).toMatch(/^FROM: unknown flag: --plat/);
    expect(e.details).toMatchObject({ file: 'ctx/Dockerfile', line: 2 });
  });

  it('rejects instructions other than ARG before the first FROM', () => {
    const e = errorOf('ARG a\n\nRUN x\nFROM a');
    expect(e.message).toMatch(/RUN before the first FROM/);
    expect(e.details.line).toBe(3);
  });

  it('keeps stage ARGs as commands', () => {
    const r = parse('FROM a\nARG X=1');
    expect(r.metaArgs).toEqual([]);
    expect(r.stages[0]!.commands[0]).toMatchObject({ kind: 'arg', args: [{ key: 'X', value: '1' }], line: 2 });
  });

  it('attaches descriptions from comments', () => {
    const r = parse('# VERSION the version to build\nARG VERSION=1\n# release builds the release image\nFROM a AS release');
    expect(r.metaArgs[0]!.args[0]!.comment).toBe('the version to build');
    expect(r.stages[0]!.comment).toBe('builds the release image');
  });
});

describe('commands', () => {
  it('RUN: shell and exec form, raw flags, heredoc files', () => {
    const run = only('RUN --mount=type=cache,target=/root/.cache --network=none echo $HOME', 'run');
    expect(run).toMatchObject({
      cmdLine: ['echo $HOME'],
      prependShell: true,
      mounts: ['type=cache,target=/root/.cache'],
      network: 'none',
      security: '',
      flags: ['--mount=type=cache,target=/root/.cache', '--network=none'],
      line: 2,
    });
    expect(only('RUN ["echo", "a b"]', 'run')).toMatchObject({ cmdLine: ['echo', 'a b'], prependShell: false });
    const hd = only('RUN <<-EOF bash\n\techo hi\n\tEOF', 'run');
    expect(hd.cmdLine).toEqual(['<<-EOF bash']);
    expect(hd.files).toEqual([{ name: 'EOF', data: '\techo hi\n', chomp: true, expand: true }]);
    expect(hd.endLine).toBe(4);
    expect(errorOf('FROM a\nRUN --mnt=x true').message).toBe('RUN: unknown flag: --mnt (did you mean mount?)');
  });

  it('CMD / ENTRYPOINT: json vs shell, empty', () => {
    expect(only('CMD ["a", "b"]', 'cmd')).toMatchObject({ cmdLine: ['a', 'b'], prependShell: false });
    expect(only('CMD a  b', 'cmd')).toMatchObject({ cmdLine: ['a  b'], prependShell: true });
    expect(only('ENTRYPOINT []', 'entrypoint')).toMatchObject({ cmdLine: [], prependShell: false });
    expect(errorOf('FROM a\nCMD --x=1 a').message).toBe('CMD: unknown flag: --x');
  });

  it('COPY: flags, sources, dest and heredoc sources', () => {
    const c = only(
      'COPY --from=build --chown=1000:1000 --chmod=0755 --link --parents --exclude=*.md --exclude=.git a "b c" /dst/',
      'copy',
    );
    expect(c).toMatchObject({
      from: 'build',
      chown: '1000:1000',
      chmod: '0755',
      link: true,
      parents: true,
      exclude: ['*.md', '.git'],
      sourcePaths: ['a', '"b', 'c"'],
      destPath: '/dst/',
      sourceContents: [],
    });
    const j = only('COPY ["a b", "<<EOF", "/d"]', 'copy');
    expect(j).toMatchObject({ sourcePaths: ['a b', '<<EOF'], destPath: '/d', link: false, from: '' });
    const h = only('COPY <<one <<-"two" /dst/\nhello $X\none\n\tworld\n\ttwo', 'copy');
    expect(h.sourcePaths).toEqual([]);
    expect(h.sourceContents).toEqual([
      { path: 'one', data: 'hello $X\n', expand: true },
      { path: 'two', data: 'world\n', expand: false },
    ]);
    expect(errorOf('FROM a\nCOPY onlyone').message).toMatch(/COPY requires at least two arguments/);
    expect(errorOf('FROM a\nCOPY a <<EOF\nx\nEOF').message).toBe('COPY cannot accept a heredoc as a destination');
    expect(errorOf('FROM a\nCOPY --link=maybe a b').message).toMatch(/expecting boolean value for flag --link, not: maybe/);
    expect(errorOf('FROM a\nCOPY --from a b').message).toMatch(/missing a value on flag: --from/);
    expect(errorOf('FROM a\nCOPY --from=x --from=y a b').message).toMatch(/duplicate flag specified: --from/);
    expect(only('COPY --link=false a b', 'copy').link).toBe(false);
  });

  it('ADD: flags', () => {
    const a = only('ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false https://x/y.tgz /d', 'add');
    expect(a).toMatchObject({ checksum: 'sha256:abc', keepGitDir: true, unpack: false, sourcePaths: ['https://x/y.tgz'] });
    expect(only('ADD a b', 'add').unpack).toBeUndefined();
    expect(errorOf('FROM a\nADD --from=x a b').message).toMatch(/unknown flag: --from/);
  });

  it('ENV / LABEL: both forms', () => {
    expect(only('ENV A=1 B="x y"', 'env').env).toEqual([
      { key: 'A', value: '1', noDelim: false },
      { key: 'B', value: '"x y"', noDelim: false },
    ]);
    expect(only('ENV A hello world', 'env').env).toEqual([{ key: 'A', value: 'hello world', noDelim: true }]);
    expect(only('LABEL a=b c=d', 'label').labels.map((l) => l.key)).toEqual(['a', 'c']);
    expect(errorOf('FROM a\nENV').message).toBe('ENV requires at least one argument');
    expect(errorOf('FROM a\nENV =x').message).toBe('ENV names can not be blank');
  });

  it('simple one-argument commands', () => {
    expect(only('WORKDIR /app', 'workdir').path).toBe('/app');
    expect(only('USER 1000:1000', 'user').user).toBe('1000:1000');
    expect(only('STOPSIGNAL SIGKILL', 'stopsignal').signal).toBe('SIGKILL');
    expect(only('MAINTAINER Jane <j@x>', 'maintainer').maintainer).toBe('Jane <j@x>');
    expect(errorOf('FROM a\nWORKDIR').message).toBe('WORKDIR requires exactly one argument');
    expect(errorOf('FROM a\nUSER').message).toBe('USER requires exactly one argument');
  });

  it('EXPOSE / VOLUME', () => {
    // Sorted as written, as BuildKit's parseExpose.
    expect(only('EXPOSE 80 443/tcp $PORT', 'expose').ports).toEqual(['$PORT', '443/tcp', '80']);
    expect(only('VOLUME ["/a", "/b"]', 'volume').volumes).toEqual(['/a', '/b']);
    expect(only('VOLUME /a /b', 'volume').volumes).toEqual(['/a', '/b']);
    expect(errorOf('FROM a\nVOLUME [" "]').message).toBe('VOLUME specified can not be an empty string');
    expect(errorOf('FROM a\nEXPOSE').message).toBe('EXPOSE requires at least one argument');
  });

  it('SHELL requires JSON', () => {
    expect(only('SHELL ["pwsh", "-c"]', 'shell').shell).toEqual(['pwsh', '-c']);
    expect(errorOf('FROM a\nSHELL pwsh -c').message).toBe('SHELL requires the arguments to be in JSON form');
    expect(errorOf('FROM a\nSHELL []').message).toBe('SHELL requires at least one argument');
  });

  it('HEALTHCHECK: CMD, NONE, flags and errors', () => {
    expect(
      only('HEALTHCHECK --interval=5s --timeout=1m30s --start-period=0s --retries=3 CMD curl -f http://x/', 'healthcheck')
        .health,
    ).toEqual({
      test: ['CMD-SHELL', 'curl -f http://x/'],
      interval: 5e9,
      timeout: 90e9,
      startPeriod: 0,
      startInterval: 0,
      retries: 3,
    });
    expect(only('HEALTHCHECK CMD ["a", "b"]', 'healthcheck').health.test).toEqual(['CMD', 'a', 'b']);
    expect(only('HEALTHCHECK none', 'healthcheck').health.test).toEqual(['NONE']);
    expect(errorOf('FROM a\nHEALTHCHECK').message).toBe('HEALTHCHECK requires at least one argument');
    expect(errorOf('FROM a\nHEALTHCHECK CMD').message).toBe('Missing command after HEALTHCHECK CMD');
    expect(errorOf('FROM a\nHEALTHCHECK CONNECT TCP 7000').message).toMatch(/Unknown type "CONNECT"/);
    expect(errorOf('FROM a\nHEALTHCHECK NONE x').message).toBe('HEALTHCHECK NONE takes no arguments');
    expect(errorOf('FROM a\nHEALTHCHECK --interval=1us CMD x').message).toMatch(/cannot be less than 1ms/);
    expect(errorOf('FROM a\nHEALTHCHECK --timeout=5 CMD x').message).toMatch(/--timeout/);
    expect(errorOf('FROM a\nHEALTHCHECK --retries=-1 CMD x').message).toMatch(/cannot be negative/);
    expect(errorOf('FROM a\nHEALTHCHECK --foo=1 CMD x').message).toMatch(/unknown flag: --foo/);
  });

  it('ONBUILD: expression and forbidden triggers', () => {
    const o = only('onbuild RUN echo "hi"', 'onbuild');
    expect(o.expression).toBe('RUN echo "hi"');
    expect(o.trigger).toMatchObject({ value: 'run', next: ['echo "hi"'] });
    expect(only('ONBUILD COPY <<EOF /x\nhello\nEOF', 'onbuild').expression).toBe('COPY <<EOF /x\nhello\nEOF');
    expect(errorOf('FROM a\nONBUILD ONBUILD RUN x').message).toMatch(/Chaining ONBUILD/);
    expect(errorOf('FROM a\nONBUILD FROM x').message).toBe("FROM isn't allowed as an ONBUILD trigger");
    expect(errorOf('FROM a\nONBUILD').message).toBe('ONBUILD requires at least one argument');
  });
});

describe('parseGoDuration', () => {
  it('parses Go durations to nanoseconds', () => {
    expect(parseGoDuration('0')).toBe(0);
    expect(parseGoDuration('1h2m3.5s')).toBe(3723.5e9);
    expect(parseGoDuration('300ms')).toBe(300e6);
    expect(parseGoDuration('1.5µs')).toBe(1500);
    expect(parseGoDuration('-2s')).toBe(-2e9);
    for (const bad of ['', '5', 's', '1x', '.s', '1s2']) expect(() => parseGoDuration(bad)).toThrow();
  });
});
