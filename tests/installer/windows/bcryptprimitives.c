/* Test-only stand-in for bcryptprimitives.dll, which Wine 8 (Debian 12) lacks and current
 * Rust std imports (ProcessPrng). Installed into the test's own WINEPREFIX only; never
 * shipped: real Windows 10/11 has the DLL. Forwards to RtlGenRandom (advapi32). */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
