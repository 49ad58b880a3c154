/** The callee of the component-to-component benchmark: does nothing. */
export const benchPeer = {
  noop() {},
};
