/** The componentize backend a bundle was built for, set by the build. */
declare const __LIBRETTO_BACKEND__: 'starlingmonkey' | 'quickjs';
