# cmake --install: installs systemd/predictd.service with the paths of this
# install in ExecStart= and Documentation=. The source unit names /usr/bin and
# /usr/share/doc (a package's --prefix /usr), so tests/systemd/check.sh can
# verify it as it is; here those two lines follow CMAKE_INSTALL_PREFIX, which
# is the install's own (cmake --install --prefix included).
# In: UNIT_SRC, UNIT_OUT (a scratch file in the build tree), BINDIR and DOCDIR
# (GNUInstallDirs' values, relative to the prefix or absolute).
foreach(var BINDIR DOCDIR)
  if(NOT IS_ABSOLUTE "${${var}}")
    set(${var} "${CMAKE_INSTALL_PREFIX}/${${var}}")
  endif()
endforeach()
file(READ "${UNIT_SRC}" unit)
foreach(line "ExecStart=/usr/bin/predictd " "Documentation=file:///usr/share/doc/predictd/")
  string(FIND "${unit}" "\n${line}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${UNIT_SRC}: no line starts with \"${line}\" (cmake/install_unit.cmake rewrites it)")
  endif()
endforeach()
string(REPLACE "\nExecStart=/usr/bin/predictd " "\nExecStart=${BINDIR}/predictd " unit "${unit}")
string(REPLACE "\nDocumentation=file:///usr/share/doc/predictd/" "\nDocumentation=file://${DOCDIR}/" unit "${unit}")
get_filename_component(out_dir "${UNIT_OUT}" DIRECTORY)
file(MAKE_DIRECTORY "${out_dir}")
file(WRITE "${UNIT_OUT}" "${unit}")
# file(INSTALL) adds DESTDIR, prints "Installing:" and records the file in install_manifest.txt.
file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system" TYPE FILE FILES "${UNIT_OUT}")
