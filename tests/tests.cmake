# Integration tests: GoogleTest programs in tests/integration that drive the
# real binaries and the kernel (many need root and skip visibly without it).
file(GLOB itest_srcs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/integration/*_itest.cc)
if(itest_srcs)
  add_executable(integration_tests ${itest_srcs})
  target_link_libraries(integration_tests PRIVATE coppice_envd_lib ${COPPICE_GATEWAY_LIBS} coppice_builder GTest::gtest_main)
  # The binaries they run (coppice-envd): this build's, or in a sanitizer
  # build those of COPPICE_AGENTS_DIR.
  if(COPPICE_SANITIZE)
    set(itest_binaries ${COPPICE_AGENTS_DIR})
  else()
    set(itest_binaries ${CMAKE_BINARY_DIR})
  endif()
  target_compile_definitions(integration_tests PRIVATE
    COPPICE_BUILD_DIR="${itest_binaries}" COPPICE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  if(NOT COPPICE_SANITIZE)
    add_dependencies(integration_tests coppice-envd)
  endif()
  gtest_discover_tests(integration_tests DISCOVERY_TIMEOUT 60 PROPERTIES RUN_SERIAL TRUE TIMEOUT 300)
endif()

# End-to-end tests: the real E2B SDKs from npm (tests/e2e/node_modules, from
# its package-lock.json) against the real binaries. Each file runs once per
# pinned SDK version; COPPICE_SDK names the package to import.
# (Not in a sanitizer build: that one is for the unit and integration tests.)
file(GLOB e2e_tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/e2e/*.test.mjs)
# Files that need the network run inside the fake internet of
# tests/e2e/net/run.sh (registered below), never directly on the host.
set(e2e_net_tests network)
foreach(n ${e2e_net_tests})
  list(REMOVE_ITEM e2e_tests ${CMAKE_SOURCE_DIR}/tests/e2e/${n}.test.mjs)
endforeach()
if(COPPICE_SANITIZE)
  set(e2e_tests "")
endif()
foreach(t ${e2e_tests})
  get_filename_component(n ${t} NAME_WE)
  foreach(sdk e2b e2b-245)
    add_test(NAME e2e.${n}.${sdk} COMMAND node --test --test-reporter=spec ${t}
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/e2e)
    set_tests_properties(e2e.${n}.${sdk} PROPERTIES
      ENVIRONMENT "COPPICE_BUILD_DIR=${CMAKE_BINARY_DIR};COPPICE_SOURCE_DIR=${CMAKE_SOURCE_DIR};COPPICE_SDK=${sdk}"
      RUN_SERIAL TRUE TIMEOUT 900 SKIP_RETURN_CODE 77)
  endforeach()
endforeach()
if(NOT COPPICE_SANITIZE)
  # The fake internet itself (namespaces, fake HTTP/UDP/TCP servers, dnsmasq).
  add_test(NAME e2e.fakenet_world COMMAND ${CMAKE_SOURCE_DIR}/tests/e2e/net/run.sh --check
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/e2e)
  set_tests_properties(e2e.fakenet_world PROPERTIES RUN_SERIAL TRUE TIMEOUT 120 SKIP_RETURN_CODE 77)
  foreach(n ${e2e_net_tests})
    foreach(sdk e2b e2b-245)
      add_test(NAME e2e.${n}.${sdk}
               COMMAND ${CMAKE_SOURCE_DIR}/tests/e2e/net/run.sh ${CMAKE_SOURCE_DIR}/tests/e2e/${n}.test.mjs
               WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/e2e)
      set_tests_properties(e2e.${n}.${sdk} PROPERTIES
        ENVIRONMENT "COPPICE_BUILD_DIR=${CMAKE_BINARY_DIR};COPPICE_SOURCE_DIR=${CMAKE_SOURCE_DIR};COPPICE_SDK=${sdk};COPPICE_NET_TIMEOUT=1700"
        RUN_SERIAL TRUE TIMEOUT 1800 SKIP_RETURN_CODE 77)
    endforeach()
  endforeach()
endif()
