; Inno Setup 6 script for ShortGPT Desktop on Windows (x64).
;
; packaging\build_windows.ps1 builds the onedir bundle dist\<flavour>\shortgpt-desktop with PyInstaller and then
; compiles this script:
;
;   ISCC.exe /DAppVersion=0.1.0 /DFlavour=cpu packaging\windows\shortgpt-desktop.iss
;
; Output: dist\installers\shortgpt-desktop-<version>-windows-x64-<flavour>-setup.exe, plus
; ...-setup-1.bin, -2.bin ... slices beside it when the bundle is large (DiskSpanning: a CUDA bundle is several GB,
; more than one setup file can hold). Keep the .bin files in the same folder as the .exe.
;
; tests/packaging/test_packaging.py checks the names below against the spec, the build scripts and the version.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef Flavour
  #define Flavour "cpu"
#endif
#define AppName "ShortGPT Desktop"
#define AppExe "shortgpt-desktop.exe"
#define CliExe "shortgpt.exe"
#define BundleDir "..\..\dist\" + Flavour + "\shortgpt-desktop"

[Setup]
; One AppId for both flavours: installing the CUDA build over the CPU build (or back) replaces it, the bundle's
; folder emptied first ([InstallDelete]).
AppId={{8C0E7D1A-5B2F-4E8B-9A47-3D6F1C2B9E15}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion} ({#Flavour})
AppPublisher=ShortGPT Desktop contributors
DefaultDirName={autopf}\ShortGPT Desktop
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
; Per-user install without administrator rights is offered too.
PrivilegesRequired=admin
PrivilegesRequiredOverridesAllowed=commandline dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
SetupIconFile=..\..\resources\icon.ico
; The app's licence on the installer's licence page; the bundled components' are in {app}\_internal\LICENSES.
LicenseFile=..\..\LICENSE
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName} ({#Flavour})
OutputDir=..\..\dist\installers
OutputBaseFilename=shortgpt-desktop-{#AppVersion}-windows-x64-{#Flavour}-setup
Compression=lzma2
SolidCompression=yes
LZMAUseSeparateProcess=yes
LZMANumBlockThreads=4
DiskSpanning=yes
DiskSliceSize=max
WizardStyle=modern
CloseApplications=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[InstallDelete]
; Inno Setup only adds and overwrites: an upgrade, or the CPU build over the CUDA build, left the old bundle's files
; in place, and torch loads every DLL in torch\lib (several GB of CUDA libraries beside the CPU build's).
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\{#AppName}"; Filename: "{app}\{#AppExe}"; Comment: "Shrink a language model by deleting its most redundant layers"
; The prompt opens in Documents with the program folder put first on its PATH, so that `shortgpt` typed there runs
; (cmd strips the outer quotes of /k "…": set "PATH=…;%PATH%" && "shortgpt.exe" --help).
Name: "{group}\{#AppName} command line"; Filename: "{cmd}"; Parameters: "/k ""set ""PATH={app};%PATH%"" && ""{#CliExe}"" --help"""; WorkingDir: "{userdocs}"
Name: "{group}\{cm:UninstallProgram,{#AppName}}"; Filename: "{uninstallexe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Anything Python or Qt wrote into the program folder (byte-code caches in a per-user install).
Type: filesandordirs; Name: "{app}\_internal"
