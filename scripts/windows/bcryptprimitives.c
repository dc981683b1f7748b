/* Wine 8.0 (Debian bookworm) lacks bcryptprimitives.dll, which Rust's std (1.78+) imports for
   ProcessPrng. Windows 10 and later have it. This stand-in fills the buffer from RtlGenRandom
   (advapi32's SystemFunction036), which Wine has, so that test binaries start under Wine. */
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
    if (!SystemFunction036(data, chunk)) return FALSE;
    data += chunk;
    len -= chunk;
  }
  return TRUE;
}
