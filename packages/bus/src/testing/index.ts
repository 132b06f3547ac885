export { runBusContract, take, waitUntil, type BusFixture } from './contract.js';
