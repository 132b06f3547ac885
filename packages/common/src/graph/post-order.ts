/**
 * Visits a graph depth-first, children before parents, each node once, with
 * an explicit stack: a chain of thousands of steps (a 5,000-line Dockerfile)
 * must not overflow the JS call stack the way a recursive walk does.
 *
 * `key` names a node (equal keys are one node); `children` lists what a node
 * depends on, in order. `visit` runs once per node after all its children.
 * A node reached again while its own children are being walked is a cycle:
 * `onCycle` is called with it and must throw (the default throws an Error).
 */
export function walkPostOrder<T>(
  roots: Iterable<T>,
  key: (node: T) => string,
  children: (node: T) => Iterable<T>,
  visit: (node: T) => void,
  onCycle: (node: T) => never = (node) => {
    throw new Error(`graph has a cycle through ${key(node)}`);
  },
): void {
  // 1 = on the current path, 2 = visited.
  const state = new Map<string, 1 | 2>();
  for (const root of roots) {
    if (state.get(key(root)) === 2) continue;
    const stack: { node: T; k: string; next: Iterator<T> }[] = [];
    const push = (node: T): void => {
      const k = key(node);
      const s = state.get(k);
      if (s === 2) return;
      if (s === 1) onCycle(node);
      state.set(k, 1);
      stack.push({ node, k, next: children(node)[Symbol.iterator]() });
    };
    push(root);
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const step = top.next.next();
      if (!step.done) {
        push(step.value);
        continue;
      }
      stack.pop();
      state.set(top.k, 2);
      visit(top.node);
    }
  }
}
