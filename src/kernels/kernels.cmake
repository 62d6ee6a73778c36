# Per-ISA compile flags of the kernel files (included right after frugal_kernels is defined). The
# rest of the build stays at the x86-64-v3 baseline; kernels/cpu_features picks a table at start-up.
# GCC 12's AVX-512 intrinsic headers start many conversions from _mm512_undefined_*(), which its
# (maybe-)uninitialized warnings report as our bug; they are silenced for these two files only.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(_frugal_kernels_dir ${PROJECT_SOURCE_DIR}/src/kernels)
  set(_frugal_avx512_quiet "")
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    set(_frugal_avx512_quiet "-Wno-uninitialized;-Wno-maybe-uninitialized")  # GCC only (clang has no such warning)
  endif()
  set_source_files_properties(${_frugal_kernels_dir}/matmul_avx512.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;${_frugal_avx512_quiet}")
  set_source_files_properties(${_frugal_kernels_dir}/matmul_avx512vnni.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;${_frugal_avx512_quiet}")
endif()
# sparse-q8 decode (vpexpandb + vpdpbusd); only called when the CPU reports VBMI2 and VNNI.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set_source_files_properties(${PROJECT_SOURCE_DIR}/src/kernels/matmul_sparse_avx512.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx512vbmi2;${_frugal_avx512_quiet}")
endif()
# sparse-q4 decode (vpmovzxbw nibble unpack + vpexpandb + vpdpbusd); same guard as sparse-q8.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set_source_files_properties(${PROJECT_SOURCE_DIR}/src/kernels/matmul_sparse_q4_avx512.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx512vbmi2;${_frugal_avx512_quiet}")
endif()
# N:M sparse decode (vpexpandb + vpdpbusd); same guard as sparse-q8.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set_source_files_properties(${PROJECT_SOURCE_DIR}/src/kernels/matmul_nm_sparse_avx512.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx512vbmi2;${_frugal_avx512_quiet}")
endif()
# AMX int8 prefill kernels; only called when kernels/cpu_features reports amx_active().
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set_source_files_properties(${PROJECT_SOURCE_DIR}/src/kernels/matmul_amx.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mamx-tile;-mamx-int8;${_frugal_avx512_quiet}")
endif()
