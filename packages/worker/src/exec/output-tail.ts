/**
 * Keeps the last `maxLines` lines of a process's combined output (and at
 * most `maxBytes` of them), for the error of a failed step.
 */
export class OutputTail {
  private text = '';
  private readonly decoder = new TextDecoder();

  constructor(
    private readonly maxLines = 10,
    private readonly maxBytes = 4096,
  ) {}

  push(chunk: Uint8Array): void {
    this.text += this.decoder.decode(chunk, { stream: true });
    if (this.text.length > this.maxBytes * 2) this.text = this.text.slice(-this.maxBytes);
  }

  /** The kept lines, without a trailing newline; "" when there was no output. */
  lines(): string[] {
    const all = this.text.replace(/\n$/, '').split('\n');
    const tail = all.slice(-this.maxLines);
    let joined = tail.join('\n');
    if (joined.length > this.maxBytes) joined = joined.slice(-this.maxBytes);
    return joined === '' ? [] : joined.split('\n');
  }
}
