import { createMemoryBus } from './memory/memory-bus.js';
import { runBusContract } from './testing/contract.js';

runBusContract('memory', async () => {
  const bus = createMemoryBus();
  return { bus, cleanup: () => bus.close() };
});
