/* Does an AMX tile instruction really run on this host? CPUID can advertise AMX while the
 * hypervisor or kernel leaves the tile state disabled (XCR0 bits 17/18 clear), and then the first
 * tile instruction traps with SIGILL. Linux also requires each process to ask for the tile data
 * state before using it (arch_prctl ARCH_REQ_XCOMP_PERM, Documentation/arch/x86/xstate.rst).
 * Exit 0 and print "amx: ok" only if permission is granted and LDTILECFG + TILEZERO + TILERELEASE
 * execute; any other outcome (refusal, trap) is "no AMX here". Run it as a child process: a trap
 * kills only the probe. The tile instructions are written as assembly: no -mamx-* flag needed. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

int main(void) {
  if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) {
    printf("amx: kernel refused tile data permission\n");
    return 1;
  }
  uint64_t permitted = 0;
  if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &permitted) != 0 ||
      !(permitted & (1ull << XFEATURE_XTILEDATA))) {
    printf("amx: tile data state not permitted\n");
    return 1;
  }
  /* Palette 1, tile 0 with 16 rows of 64 bytes (Intel SDM vol. 1, 18.2 "tile configuration"). */
  unsigned char config[64];
  memset(config, 0, sizeof config);
  config[0] = 1;
  config[16] = 64;
  config[48] = 16;
  __asm__ volatile("ldtilecfg %0" ::"m"(config));
  __asm__ volatile("tilezero %%tmm0" ::);
  __asm__ volatile("tilerelease" ::);
  printf("amx: ok\n");
  return 0;
}
